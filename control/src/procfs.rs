//! A process's resource figures from `/proc/<pid>`: CPU time, resident memory, threads, open
//! files and I/O bytes. Used by viscript's `res_usage` and GUI (about its apps) and by the
//! signal client (about itself). Also a process's supplementary groups ([`groups`]), which
//! the node's app socket checks against `node.apps.group`.
//!
//! The parsers are pure functions over the files' text, tested with fixed samples; [`read`]
//! does the I/O. A figure the kernel does not show (no `/proc/<pid>/io` for another user's
//! process without root) is `None`, never an error. CPU percentage needs two samples:
//! [`cpu_percent`] takes them and the time between.

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat` times. `USER_HZ` is 100 on every Linux
/// architecture's ABI (the kernel converts), so it is a constant rather than a sysconf call.
pub const CLOCK_TICKS_PER_SEC: u64 = 100;

/// The figures of one process at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Usage {
    /// The process's state letter from `stat` (`R`, `S`, `Z`...).
    pub state: Option<char>,
    /// User plus system CPU time, in clock ticks ([`CLOCK_TICKS_PER_SEC`]).
    pub cpu_ticks: Option<u64>,
    /// Resident memory (`VmRSS`), in bytes.
    pub rss_bytes: Option<u64>,
    /// Threads.
    pub threads: Option<u64>,
    /// Open file descriptors.
    pub open_files: Option<u64>,
    /// Bytes read from storage (`read_bytes` of `io`).
    pub read_bytes: Option<u64>,
    /// Bytes written to storage (`write_bytes` of `io`).
    pub write_bytes: Option<u64>,
}

/// A sample: the figures and when they were taken.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The figures.
    pub usage: Usage,
    /// When they were read.
    pub at: Instant,
}

/// Read the figures of process `pid`; `None` if it does not exist (any more).
pub fn read(pid: u32) -> Option<Sample> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let at = Instant::now();
    let stat = fs::read_to_string(dir.join("stat")).ok()?;
    let (state, cpu_ticks) = parse_stat(&stat).unwrap_or((None, None));
    let status = fs::read_to_string(dir.join("status")).unwrap_or_default();
    let io = fs::read_to_string(dir.join("io")).unwrap_or_default();
    let open_files = fs::read_dir(dir.join("fd"))
        .ok()
        .map(|entries| u64::try_from(entries.count()).unwrap_or(u64::MAX));
    Some(Sample {
        usage: Usage {
            state,
            cpu_ticks,
            rss_bytes: status_kib(&status, "VmRSS").map(|kib| kib.saturating_mul(1024)),
            threads: field(&status, "Threads"),
            open_files,
            read_bytes: field(&io, "read_bytes"),
            write_bytes: field(&io, "write_bytes"),
        },
        at,
    })
}

/// The state letter and utime + stime of a `/proc/<pid>/stat` line. The command name (field
/// 2) may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat(stat: &str) -> Option<(Option<char>, Option<u64>)> {
    let rest = stat.get(stat.rfind(')')?.checked_add(1)?..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of the line, utime 14 and stime 15.
    let state = fields.first().and_then(|s| s.chars().next());
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    let cpu = match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => Some(user.saturating_add(system)),
        _ => None,
    };
    Some((state, cpu))
}

/// The parent pid in a `/proc/<pid>/stat` line.
pub fn parse_parent(stat: &str) -> Option<u32> {
    let rest = stat.get(stat.rfind(')')?.checked_add(1)?..)?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// A `Key: value kB` line of `status`, in KiB.
fn status_kib(text: &str, key: &str) -> Option<u64> {
    field(text, key)
}

/// The first number after `key:` on the line starting with it (`status` and `io` format).
pub fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// The supplementary group ids of process `pid` (the `Groups:` line of its `status`);
/// `None` when the process is gone or the line is missing.
pub fn groups(pid: u32) -> Option<Vec<u32>> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_groups(&status)
}

/// The ids on the `Groups:` line of a `/proc/<pid>/status` text (possibly none); `None`
/// without such a line or with a value that is not a group id.
pub fn parse_groups(status: &str) -> Option<Vec<u32>> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))?;
    line.split_whitespace().map(|id| id.parse().ok()).collect()
}

/// CPU use between two samples of one process, in percent of one core (above 100 for a
/// process busy on several cores). `None` without both CPU times or with no time between.
pub fn cpu_percent(earlier: &Sample, later: &Sample) -> Option<f64> {
    let ticks = later
        .usage
        .cpu_ticks?
        .checked_sub(earlier.usage.cpu_ticks?)?;
    let wall = later.at.checked_duration_since(earlier.at)?.as_secs_f64();
    if wall <= 0.0 {
        return None;
    }
    #[allow(clippy::cast_precision_loss)] // tick counts far below 2^52
    let busy = ticks as f64 / CLOCK_TICKS_PER_SEC as f64;
    Some(100.0 * busy / wall)
}

/// The pids of this process's children that are zombies (exited, not reaped). Viscript's
/// invariant is that this stays empty for long; tests check it.
pub fn zombie_children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                parse_parent(&stat) == Some(parent)
                    && parse_stat(&stat).and_then(|(state, _)| state) == Some('Z')
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn supplementary_groups() {
        let status =
            "Name:\tbash\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 27 1000 \nNgid:\t0\n";
        assert_eq!(parse_groups(status), Some(vec![4, 24, 27, 1000]));
        assert_eq!(parse_groups("Groups:\n"), Some(vec![]));
        assert_eq!(parse_groups("Groups:\t4 x\n"), None);
        assert_eq!(parse_groups("Name:\tbash\n"), None);
        assert!(groups(std::process::id()).is_some());
    }

    const STAT: &str = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 1043 0 0 0 \
                        250 37 0 0 20 0 3 0 123456 12345678 2048 18446744073709551615";

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        assert_eq!(parse_stat(STAT), Some((Some('S'), Some(287))));
        assert_eq!(parse_parent(STAT), Some(1));
        assert_eq!(parse_stat("no name here"), None);
        assert_eq!(parse_stat("1 (x) Z"), Some((Some('Z'), None)));
    }

    #[test]
    fn status_and_io_fields() {
        let status = "Name:\tsleep\nVmPeak:\t  8000 kB\nVmRSS:\t    1536 kB\nThreads:\t3\n";
        assert_eq!(status_kib(status, "VmRSS"), Some(1536));
        assert_eq!(field(status, "Threads"), Some(3));
        assert_eq!(field(status, "VmSwap"), None);
        let io = "rchar: 10\nwchar: 20\nread_bytes: 4096\nwrite_bytes: 8192\n";
        assert_eq!(field(io, "read_bytes"), Some(4096));
        assert_eq!(field(io, "write_bytes"), Some(8192));
    }

    #[test]
    fn cpu_percent_is_ticks_over_wall_time() {
        let at = Instant::now();
        let sample = |ticks, at| Sample {
            usage: Usage {
                cpu_ticks: Some(ticks),
                ..Usage::default()
            },
            at,
        };
        let a = sample(100, at);
        let b = sample(150, at + Duration::from_secs(1));
        assert_eq!(cpu_percent(&a, &b), Some(50.0));
        assert_eq!(cpu_percent(&b, &a), None);
        assert_eq!(cpu_percent(&a, &a), None);
    }

    #[test]
    fn this_process_is_readable() {
        let me = read(std::process::id()).unwrap();
        assert!(me.usage.rss_bytes.unwrap() > 0);
        assert!(me.usage.threads.unwrap() >= 1);
        assert!(me.usage.open_files.unwrap() >= 3);
        assert!(me.usage.state.is_some());
    }
}
