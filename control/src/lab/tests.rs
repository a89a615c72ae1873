use super::*;
use std::sync::atomic::AtomicU32;

/// A folder under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("skywire-lab-test-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn listed(prefix: &str) -> Vec<String> {
    ip_output(&["netns", "list"])
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_owner_of_a_name_is_the_pid_after_the_tag() {
    assert_eq!(stale::owner("swt", "swt-123-a"), Some(123));
    assert_eq!(stale::owner("swt", "swt-123.4-a"), Some(123));
    assert_eq!(stale::owner("swt", "swt-123"), Some(123));
    assert_eq!(stale::owner("swt", "swt-123-0x"), Some(123));
    assert_eq!(stale::owner("skybench", "skybench-77.1-0"), Some(77));
    for other in [
        "swt",
        "swt-",
        "swt-a",
        "swt-12a",
        "swtx-12-a",
        "skydemo-12-a",
        "swt--12",
        "xswt-1-a",
        "swt-99999999999999999999-a",
    ] {
        assert_eq!(stale::owner("swt", other), None, "{other}");
    }
}

#[test]
fn a_dead_labs_folder_goes_and_its_sysctls_come_back() {
    let scratch = Scratch::new();
    let (netns, temp, sys) = (
        scratch.0.join("netns"),
        scratch.0.join("tmp"),
        scratch.0.join("sys"),
    );
    for dir in [&netns, &temp, &sys.join("net/core")] {
        fs::create_dir_all(dir).unwrap();
    }
    fs::write(sys.join("net/core/rmem_max"), "4194304\n").unwrap();
    // A pid that is not running now.
    let dead = (2..4_000_000u32)
        .rev()
        .find(|pid| !Path::new("/proc").join(pid.to_string()).exists())
        .unwrap();
    let me = std::process::id();
    let stale = temp.join(format!("swtx-{dead}.2"));
    fs::create_dir(&stale).unwrap();
    fs::write(
        stale.join(SYSCTL_RECORD),
        "net/core/rmem_max\t212992\n../escape\t1\n",
    )
    .unwrap();
    let live = temp.join(format!("swtx-{me}-0"));
    fs::create_dir(&live).unwrap();
    let not_a_folder = temp.join(format!("swtx-{dead}-file"));
    fs::write(&not_a_folder, "").unwrap();
    let other_tag = temp.join(format!("swty-{dead}"));
    fs::create_dir(&other_tag).unwrap();

    let done = stale::sweep("swtx", &netns, &temp, &sys);
    assert!(!stale.exists(), "{done:?}");
    assert!(live.exists() && not_a_folder.exists() && other_tag.exists());
    assert_eq!(
        fs::read_to_string(sys.join("net/core/rmem_max")).unwrap(),
        "212992"
    );
    assert!(!scratch.0.join("escape").exists());
    assert_eq!(done.len(), 2, "{done:?}");
}

#[test]
fn names_are_checked_before_anything_runs() {
    let err = Lab::new(LabOptions::new("Bad-Tag")).unwrap_err();
    assert!(
        matches!(err, LabError::BadName { what: "tag", .. }),
        "{err}"
    );
    let end = LinkEnd::new("a", "x").address(std::net::Ipv4Addr::LOCALHOST, 33);
    assert!(matches!(end, Err(LabError::BadName { .. })));
    let end = LinkEnd::new("a", "x")
        .address(std::net::Ipv6Addr::LOCALHOST, 128)
        .unwrap();
    assert_eq!(end.addresses, ["::1/128".parse().unwrap()]);
}

/// Everything a lab makes is gone after its teardown, which reports each step: processes
/// stopped on SIGTERM or killed after their grace, a stray process in a namespace killed,
/// sysctls restored, namespaces deleted, the folder removed.
#[test]
fn a_lab_undoes_everything_and_says_so() {
    if !is_root() {
        println!("a_lab_undoes_everything_and_says_so: skipped: needs root");
        return;
    }
    let sys = Scratch::new();
    fs::create_dir_all(sys.0.join("net/core")).unwrap();
    fs::write(sys.0.join("net/core/wmem_max"), "212992\n").unwrap();

    let mut lab = Lab::new(LabOptions::new("skylabtest")).unwrap();
    lab.sysctl_root = sys.0.clone();
    let prefix = lab.prefix().to_owned();
    let dir = lab.dir().to_owned();
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    lab.add_host("a").unwrap();
    lab.add_host("b").unwrap();
    lab.link(
        &LinkEnd::new("a", "to-b")
            .address(std::net::Ipv4Addr::new(198, 18, 7, 1), 24)
            .unwrap()
            .prefix("fd00:7::1/64".parse().unwrap()),
        &LinkEnd::new("b", "to-a")
            .address(std::net::Ipv4Addr::new(198, 18, 7, 2), 24)
            .unwrap()
            .prefix("fd00:7::2/64".parse().unwrap()),
    )
    .unwrap();
    assert_eq!(listed(&prefix).len(), 2);
    // Both families cross the link at once (no duplicate address detection to wait for).
    for to in ["198.18.7.2", "fd00:7::2"] {
        let out = lab
            .command("a", "ping")
            .args(["-n", "-c", "1", "-W", "2", to])
            .output()
            .unwrap();
        assert!(out.status.success(), "ping {to}: {out:?}");
    }
    // No default route: nothing leaves the machine.
    let routes = lab.ip_in("a", &["route", "show", "default"]).unwrap();
    assert!(routes.trim().is_empty(), "{routes}");

    let sleeper = lab
        .start(
            "a",
            Spawn::new("sleeper", "sleep")
                .arg("600")
                .log(lab.file("sleep.log")),
        )
        .unwrap();
    let stubborn = lab
        .start(
            "b",
            Spawn::new("stubborn", "sh")
                .args(["-c", "trap '' TERM; echo ignoring TERM; sleep 600 & wait"])
                .log(lab.file("stubborn.log"))
                .grace(Duration::from_millis(300)),
        )
        .unwrap();
    let mut stray = lab.command("b", "sleep").arg("600").spawn().unwrap();
    lab.check_processes().unwrap();
    let pids: Vec<u32> = [sleeper, stubborn]
        .iter()
        .map(|id| lab.process(*id).unwrap().pid())
        .collect();

    lab.set_sysctl("net/core/wmem_max", "4194304").unwrap();
    lab.set_sysctl("net/core/wmem_max", "8388608").unwrap();
    assert_eq!(
        fs::read_to_string(sys.0.join("net/core/wmem_max")).unwrap(),
        "8388608"
    );
    assert!(matches!(
        lab.set_sysctl("../x", "1"),
        Err(LabError::BadName { .. })
    ));
    let key = lab.write_key("a.key").unwrap();
    assert_eq!(
        fs::metadata(lab.file("a.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let config = lab
        .write_config(
            "a.yaml",
            &ConfigFile::node(crate::config::NodeSection::new("a.key")),
        )
        .unwrap();
    let loaded = crate::config::Config::load(&config).unwrap();
    assert_eq!(loaded.node.key, lab.file("a.key"));
    assert!(
        crate::keyfile::load_private_key(&loaded.node.key).is_ok_and(|k| k.public_key() == key)
    );

    // The shell ignores SIGTERM only once it ran `trap`.
    let started = Instant::now();
    while !lab
        .process(stubborn)
        .unwrap()
        .log_text()
        .contains("ignoring TERM")
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the shell never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let report = lab.teardown();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let how: Vec<(&str, Stopped)> = report
        .processes
        .iter()
        .map(|p| (p.what.as_str(), p.stopped))
        .collect();
    assert!(
        matches!(
            how.as_slice(),
            [
                ("sleeper", Stopped::OnTerm(_)),
                ("stubborn", Stopped::Killed)
            ]
        ),
        "{how:?}"
    );
    // The stubborn shell's background sleep went with its group; the stray was killed by
    // namespace.
    assert!(
        report
            .killed_leftovers
            .iter()
            .any(|(ns, pids)| ns.ends_with("-b") && pids.contains(&stray.id())),
        "{:?}",
        report.killed_leftovers
    );
    assert!(!stray.wait().unwrap().success());
    assert_eq!(
        report.restored_sysctls,
        [("net/core/wmem_max".to_owned(), "212992".to_owned())]
    );
    assert_eq!(
        fs::read_to_string(sys.0.join("net/core/wmem_max")).unwrap(),
        "212992"
    );
    assert_eq!(report.namespaces.len(), 2);
    assert_eq!(report.removed_dir.as_deref(), Some(dir.as_path()));
    assert!(listed(&prefix).is_empty());
    assert!(!dir.exists());
    for pid in pids {
        assert!(!Path::new("/proc").join(pid.to_string()).exists(), "{pid}");
    }
    // Once only.
    let again = lab.teardown();
    assert!(again.namespaces.is_empty() && again.problems.is_empty());
}

#[test]
fn an_interrupted_or_dropped_lab_leaves_nothing() {
    if !is_root() {
        println!("an_interrupted_or_dropped_lab_leaves_nothing: skipped: needs root");
        return;
    }
    let options = LabOptions::new("skylabtest");
    let flag = Arc::clone(&options.interrupted);
    let mut lab = Lab::new(options).unwrap();
    let (prefix, dir) = (lab.prefix().to_owned(), lab.dir().to_owned());
    lab.add_host("a").unwrap();
    let mut process = lab
        .spawn("a", Spawn::new("sleeper", "sleep").arg("600"))
        .unwrap();
    let pid = process.pid();
    let id = lab
        .start(
            "a",
            Spawn::new("node", "sleep")
                .arg("600")
                .log(lab.file("n.log")),
        )
        .unwrap();
    flag.store(true, Ordering::Relaxed);
    assert!(matches!(lab.add_host("b"), Err(LabError::Interrupted)));
    assert!(matches!(
        lab.wait_until_serving(id, &lab.file("none.sock"), Duration::from_secs(1)),
        Err(LabError::Interrupted)
    ));
    // The caller's own process: SIGINT to its group, then a kill.
    process.signal(Signal::INT).unwrap();
    assert!(process.wait_timeout(Duration::from_secs(5)).is_some());
    assert!(process.signal(Signal::TERM).is_err());
    assert!(matches!(process.kill(), Stopped::Before(_)));
    drop(process);
    drop(lab);
    assert!(listed(&prefix).is_empty());
    assert!(!dir.exists());
    assert!(!Path::new("/proc").join(pid.to_string()).exists());
}

/// A `skywire node` stand-in that exits at once: waiting for it to serve fails with its
/// log.
#[test]
fn a_process_that_exits_is_reported_with_its_log() {
    if !is_root() {
        println!("a_process_that_exits_is_reported_with_its_log: skipped: needs root");
        return;
    }
    let mut lab = Lab::new(LabOptions::new("skylabtest")).unwrap();
    lab.add_host("a").unwrap();
    let id = lab
        .start(
            "a",
            Spawn::new("node A", "sh")
                .args(["-c", "echo starting; echo cannot open TUN >&2; exit 3"])
                .log(lab.file("a.log")),
        )
        .unwrap();
    let err = lab
        .wait_until_serving(id, &lab.file("a.sock"), Duration::from_secs(5))
        .unwrap_err();
    let LabError::Exited { what, status, log } = &err else {
        panic!("{err:?}")
    };
    assert_eq!((what.as_str(), status.code()), ("node A", Some(3)));
    assert_eq!(log, "    starting\n    cannot open TUN");
    assert!(
        err.to_string()
            .starts_with("node A exited (exit status: 3)"),
        "{err}"
    );
    assert!(matches!(
        lab.check_processes(),
        Err(LabError::Exited { .. })
    ));
    let report = lab.teardown();
    assert!(matches!(
        report.processes.as_slice(),
        [StoppedProcess {
            stopped: Stopped::Before(_),
            ..
        }]
    ));
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}
