//! A node under resource caps, with traffic through its TUN (root only): row 13 of the
//! fault table (`RELIABILITY.md`).
//!
//! ```text
//!   A eth-c 198.18.1.1 ---- eth-a 198.18.1.2 C
//!   sky0 10.77.0.1/24                        sky0 10.77.0.3/24
//! ```
//!
//! One route A <-> C, direct (A sends 100, C sends 200). C is the node under test:
//!
//! - **descriptors**: C started under `prlimit --nofile=64:64` (`ulimit -n 64`), a ping
//!   every 100 ms and a TCP transfer through the TUNs, while the test holds hundreds of
//!   connections to C's control and app sockets that say nothing, which runs C out of
//!   descriptors (`EMFILE`). C must log it (a clear line, at most one per socket every
//!   few seconds), not abort, not spin (its accept threads' CPU time is read from
//!   `/proc/PID/task/*/stat`), keep forwarding, and answer `status` again once the
//!   connections are gone;
//! - **memory**: C moved into a memory cgroup (v1) limited to 64 MB, its charges with it,
//!   under a ping and a TCP
//!   transfer: it keeps forwarding, is never OOM-killed (`memory.failcnt`,
//!   `memory.oom_control`, and the process lives), and its resident set stays bounded.
//!   Skipped, saying so, only where the memory controller is not mounted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
mod netns;

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netns::{Node, Proc, Topology, addr, cpu_ticks, key_values, open_fds, route, tun, wait_until};

const A_TUN_V4: &str = "10.77.0.1";
const C_TUN_V4: &str = "10.77.0.3";

/// Nodes before the topology, so a failing test prints their logs before the folder goes.
struct TwoNodes {
    a: Node,
    c: Node,
    topo: Topology,
}

impl TwoNodes {
    /// Build A and C, start A, then C through `c_wrapper` (see [`Node::start_under`]), and
    /// bring the route up.
    fn start(c_wrapper: &[&str]) -> Self {
        Self::start_with(c_wrapper, |_| {})
    }

    /// [`Self::start`], with `before_exec` called with the pid of C's wrapper once it runs
    /// (C's wrapper must wait for it: see the memory test).
    fn start_with(c_wrapper: &[&str], before_exec: impl FnOnce(u32)) -> Self {
        let mut topo = Topology::new();
        topo.host("a");
        topo.host("c");
        topo.link(
            ("a", "eth-c", "198.18.1.1/24"),
            ("c", "eth-a", "198.18.1.2/24"),
        );
        let a = Node::new(&topo, "a", "a");
        let c = Node::new(&topo, "c", "c");
        a.configure(|node| {
            node.listen = addr("198.18.1.1:6000");
            node.tun = Some(tun("sky0", &["10.77.0.1/24"]));
            node.routes = vec![route(
                "to-c",
                c.key(),
                &["10.77.0.3/32"],
                "198.18.1.2:6000",
                (100, 200, 100),
                "198.18.1.2:6000",
            )];
        });
        c.configure(|node| {
            node.listen = addr("198.18.1.2:6000");
            node.tun = Some(tun("sky0", &["10.77.0.3/24"]));
            node.routes = vec![route(
                "to-a",
                a.key(),
                &["10.77.0.1/32"],
                "198.18.1.1:6000",
                (200, 100, 200),
                "198.18.1.1:6000",
            )];
        });
        let mut nodes = Self { a, c, topo };
        nodes.a.start();
        nodes.c.spawn_under(c_wrapper);
        before_exec(nodes.c.pid().unwrap());
        nodes.c.wait_serving();
        let up = wait_until(Duration::from_secs(10), || {
            nodes.topo.ping("a", A_TUN_V4, C_TUN_V4, 1) == 1
        });
        assert!(up.is_some(), "no ping A -> C within 10 s");
        nodes
    }

    /// `ping -i 0.1 -W 1` A -> C, `count` times, running in the background.
    fn ping(&self, count: u32) -> Proc {
        self.topo.spawn(
            "a",
            "ping",
            Path::new("ping"),
            &[
                "-n",
                "-q",
                "-c",
                &count.to_string(),
                "-i",
                "0.1",
                "-W",
                "1",
                "-I",
                A_TUN_V4,
                C_TUN_V4,
            ],
        )
    }

    /// `bytes` over TCP from A's TUN to C's, started now: (source, sink).
    fn transfer(&self, bytes: u64, port: u16) -> (Proc, Proc) {
        let port = port.to_string();
        let sink = self.topo.spawn_tool(
            "c",
            "tcp_sink.py",
            &["--listen", C_TUN_V4, "--port", &port, "--timeout", "90"],
        );
        sink.expect_line("listening", Duration::from_secs(10));
        let source = self.topo.spawn_tool(
            "a",
            "tcp_source.py",
            &[
                "--connect",
                C_TUN_V4,
                "--port",
                &port,
                "--bind",
                A_TUN_V4,
                "--bytes",
                &bytes.to_string(),
                "--seed",
                "1313",
                "--timeout",
                "90",
            ],
        );
        (source, sink)
    }
}

/// Wait for a transfer and check it arrived whole: its time.
fn transfer_done(bytes: u64, (mut source, mut sink): (Proc, Proc)) {
    let sent = key_values(&source.finish(Duration::from_secs(120)).join(" "));
    let received = key_values(&sink.finish(Duration::from_secs(30)).join(" "));
    assert_eq!(sent["bytes"], bytes.to_string());
    assert_eq!(received["bytes"], bytes.to_string(), "bytes received by C");
    assert_eq!(received["sha256"], sent["sha256"], "SHA-256 at C");
}

/// `ping -q`'s summary: (transmitted, received).
fn ping_result(mut ping: Proc, timeout: Duration) -> (u32, u32) {
    let (_, out) = ping.finish_any(timeout);
    let summary = out
        .iter()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary in {out:?}"));
    let numbers: Vec<u32> = summary
        .split(", ")
        .filter_map(|part| part.split_whitespace().next()?.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// A non-blocking connection to the Unix socket `path`, or `None` when the node's backlog
/// is full (`EAGAIN`) or anything else refuses it.
fn connect_nonblocking(path: &Path) -> Option<OwnedFd> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .ok()?;
    rustix::net::connect(&fd, &SocketAddrUnix::new(path).ok()?).ok()?;
    Some(fd)
}

/// CPU ticks (1/100 s) of each thread of `pid`, by thread name.
fn thread_ticks(pid: u32) -> Vec<(String, u64)> {
    let mut threads = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let tid: u32 = task.file_name().to_string_lossy().parse().unwrap_or(0);
        threads.push((name.trim().to_owned(), task_ticks(pid, tid)));
    }
    threads
}

fn task_ticks(pid: u32, tid: u32) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap_or_default();
    let rest = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    tick(11) + tick(12)
}

/// The ticks of the threads named `name`, summed.
fn ticks_of(threads: &[(String, u64)], name: &str) -> u64 {
    threads
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, t)| t)
        .sum()
}

#[test]
fn a_node_out_of_descriptors_logs_it_keeps_forwarding_and_recovers() {
    if !netns::skip_unless_root("a_node_out_of_descriptors_logs_it_keeps_forwarding_and_recovers") {
        return;
    }
    let started = Instant::now();
    let mut nodes = TwoNodes::start(&["prlimit", "--nofile=64:64", "--"]);
    let pid = nodes.c.pid().unwrap();
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert!(nofile.split_whitespace().any(|w| w == "64"), "{nofile}");
    let fds0 = open_fds(pid);
    println!("C (pid {pid}) runs with `{nofile}`, {fds0} descriptors open");

    // Traffic through C's TUN for the whole test: a ping every 100 ms, and a TCP transfer.
    let ping = nodes.ping(200);
    let transfer = nodes.transfer(100_000_000, 5201);

    // The pressure: connections that say nothing, to the control socket (it serves 16 at
    // once and closes the longest idle for a newcomer) and to the app socket (1024 may be
    // in their opening), until C has no descriptor left.
    let control = nodes.c.socket().to_path_buf();
    let apps = nodes.c.dir().join("ctl-apps").join("node.sock");
    assert!(apps.exists(), "no app socket at {}", apps.display());
    let mut held: Vec<OwnedFd> = Vec::new();
    let mut refused = 0;
    for i in 0..400 {
        let path = if i % 2 == 0 { &control } else { &apps };
        match connect_nonblocking(path) {
            Some(fd) => held.push(fd),
            None => refused += 1,
        }
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let exhausted = wait_until(Duration::from_secs(5), || open_fds(pid) >= 64);
    let fds = open_fds(pid);
    println!(
        "held {} connections ({refused} refused: backlog full); C holds {fds} descriptors",
        held.len()
    );
    assert!(exhausted.is_some(), "C never ran out: {fds} descriptors");

    // At EMFILE for 3 s: the accept threads sleep between tries instead of spinning; the
    // whole node's CPU is mostly the traffic.
    let before = thread_ticks(pid);
    let cpu0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(3));
    let after = thread_ticks(pid);
    let cpu = cpu_ticks(pid) - cpu0;
    let accept_ticks = ["skywire-ctl", "skywire-apps"]
        .map(|name| ticks_of(&after, name) - ticks_of(&before, name));
    println!(
        "at EMFILE for 3 s: C used {cpu} ticks of CPU (1/100 s) in all, its accept threads \
         (control, apps) {accept_ticks:?}; still {} descriptors",
        open_fds(pid)
    );
    let status_at_emfile = nodes.c.try_status().is_some();
    println!("`skywire status` while C is out of descriptors: answered: {status_at_emfile}");
    assert!(
        accept_ticks.iter().all(|&t| t <= 5),
        "an accept thread spins at EMFILE: {accept_ticks:?} ticks in 3 s"
    );
    assert!(nodes.c.is_running(), "C died at EMFILE");

    // The pressure goes: C answers again, and its descriptors come back.
    drop(held);
    let recovered = wait_until(Duration::from_secs(15), || nodes.c.try_status().is_some());
    println!("connections closed; `status` answered after {recovered:?}");
    assert!(
        recovered.is_some(),
        "C's control socket never answered again"
    );
    let settled = wait_until(Duration::from_secs(15), || open_fds(pid) <= fds0 + 2);
    println!(
        "C back to {} descriptors after {settled:?} (it started with {fds0})",
        open_fds(pid)
    );
    assert!(settled.is_some());

    // The traffic went on throughout.
    transfer_done(100_000_000, transfer);
    let (sent, answered) = ping_result(ping, Duration::from_secs(60));
    println!("pings A -> C through the test: {answered} of {sent}");
    assert_eq!(answered, sent, "pings lost");
    assert_eq!(nodes.topo.ping("a", A_TUN_V4, C_TUN_V4, 3), 3);

    // Said clearly, and not once per failed accept (every 50 ms).
    let log = nodes.c.log_text();
    let emfile: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Too many open files"))
        .collect();
    println!("C logged {} lines about it:", emfile.len());
    for line in emfile.iter().take(6) {
        println!("  {line}");
    }
    assert!(!emfile.is_empty(), "nothing logged about EMFILE:\n{log}");
    let secs = started.elapsed().as_secs();
    assert!(
        emfile.len() as u64 <= 2 * (secs / 10 + 2),
        "{} lines in {secs} s",
        emfile.len()
    );
    assert!(!log.contains("panicked"), "{log}");
    assert!(nodes.c.is_running());
    println!("ok in {:?}", started.elapsed());
}

/// The cgroup v1 memory controller's mount point, if this machine has one.
fn memory_controller() -> Option<PathBuf> {
    let root = PathBuf::from("/sys/fs/cgroup/memory");
    root.join("memory.limit_in_bytes").exists().then_some(root)
}

/// A child memory cgroup, removed when dropped (its processes moved back to the root).
struct MemoryCgroup {
    root: PathBuf,
    dir: PathBuf,
}

impl MemoryCgroup {
    fn new(root: &Path, name: &str, limit: u64) -> Self {
        let dir = root.join(name);
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("cannot make {}: {e}", dir.display()));
        let group = Self {
            root: root.to_path_buf(),
            dir,
        };
        group.write("memory.limit_in_bytes", &limit.to_string());
        group
    }

    fn write(&self, file: &str, value: &str) {
        let path = self.dir.join(file);
        fs::write(&path, value).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    fn read(&self, file: &str) -> String {
        fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    fn number(&self, file: &str) -> u64 {
        self.read(file).trim().parse().unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // A cgroup with processes cannot be removed: move them out first.
        for pid in self.read("cgroup.procs").lines() {
            let _ = fs::write(self.root.join("cgroup.procs"), pid);
        }
        if let Err(e) = fs::remove_dir(&self.dir) {
            eprintln!("cannot remove {}: {e}", self.dir.display());
        }
    }
}

#[test]
fn a_node_in_a_64_mb_memory_cgroup_keeps_forwarding() {
    if !netns::skip_unless_root("a_node_in_a_64_mb_memory_cgroup_keeps_forwarding") {
        return;
    }
    let Some(root) = memory_controller() else {
        println!(
            "a_node_in_a_64_mb_memory_cgroup_keeps_forwarding: skipped: no cgroup v1 memory \
             controller at /sys/fs/cgroup/memory"
        );
        return;
    };
    let started = Instant::now();
    let group = MemoryCgroup::new(
        &root,
        &format!("skywire-test-{}", std::process::id()),
        64 << 20,
    );
    // C joins the group before it execs the node, so all of the node's memory is charged
    // there (cgroup v1 leaves pages charged where they were allocated, and this kernel
    // refuses `memory.move_charge_at_immigrate`; `ip netns exec` hides /sys/fs/cgroup, so
    // the wrapper cannot join by itself): the wrapper waits for a file, the test moves it.
    let go = std::env::temp_dir().join(format!("skywire-cgroup-go-{}", std::process::id()));
    let _ = fs::remove_file(&go);
    let wait = format!(
        "i=0; while [ ! -e {go} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; \
         exec \"$@\"",
        go = go.display()
    );
    let mut nodes = TwoNodes::start_with(&["sh", "-c", &wait, "sh"], |pid| {
        group.write("cgroup.procs", &pid.to_string());
        fs::write(&go, "").unwrap();
    });
    let _ = fs::remove_file(&go);
    let pid = nodes.c.pid().unwrap();
    assert!(
        group
            .read("cgroup.procs")
            .lines()
            .any(|p| p == pid.to_string()),
        "C is not in {}",
        group.dir.display()
    );
    let rss0 = netns::proc_status_bytes(pid, "VmRSS");
    println!(
        "C (pid {pid}) in {} with memory.limit_in_bytes {}, RSS {:.1} MB",
        group.dir.display(),
        group.number("memory.limit_in_bytes"),
        rss0 as f64 / 1e6
    );

    // Traffic through C: a ping every 100 ms and 300 MB of TCP, then a second transfer.
    let ping = nodes.ping(100);
    transfer_done(300_000_000, nodes.transfer(300_000_000, 5202));
    transfer_done(100_000_000, nodes.transfer(100_000_000, 5203));
    let (sent, answered) = ping_result(ping, Duration::from_secs(60));
    let rss = netns::proc_status_bytes(pid, "VmRSS");
    let peak_rss = netns::proc_status_bytes(pid, "VmHWM");
    let anon = netns::proc_status_bytes(pid, "RssAnon");
    let usage_peak = group.number("memory.max_usage_in_bytes");
    let failcnt = group.number("memory.failcnt");
    let oom = group.read("memory.oom_control");
    println!(
        "pings {answered} of {sent}; C's RSS {:.1} MB now ({:.1} MB anonymous, the rest the \
         binary's mapped pages), peak {:.1} MB; the cgroup's peak usage {:.1} MB, failcnt \
         {failcnt}; oom_control: {}",
        rss as f64 / 1e6,
        anon as f64 / 1e6,
        peak_rss as f64 / 1e6,
        usage_peak as f64 / 1e6,
        oom.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    assert!(nodes.c.is_running(), "C died in the cgroup");
    let oom_kills: u64 = oom
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .map_or(0, |n| n.trim().parse().unwrap());
    assert_eq!(oom_kills, 0, "{oom}");
    assert!(oom.contains("under_oom 0"), "{oom}");
    assert_eq!(answered, sent, "pings lost");
    // The group was charged with C's memory (it ran inside it from its exec on).
    assert!(
        usage_peak >= anon,
        "the cgroup's peak {usage_peak} < C's anonymous memory {anon}"
    );
    assert!(peak_rss < 64 << 20, "C's peak RSS {peak_rss}");
    assert_eq!(nodes.topo.ping("a", A_TUN_V4, C_TUN_V4, 3), 3);
    println!("ok in {:?}", started.elapsed());
}
