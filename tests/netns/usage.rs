//! What a process holds, read from `/proc` (open file descriptors, resident memory), and
//! the panics in a log: the "flat and quiet" checks of the churn and soak tests.

use std::fmt;
use std::fs;

/// One sample of a process's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Entries of `/proc/PID/fd`.
    pub(crate) fds: usize,
    /// `VmRSS` of `/proc/PID/status`, in KiB.
    pub(crate) rss_kib: u64,
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} fds, {:.1} MiB",
            self.fds,
            self.rss_kib as f64 / 1024.0
        )
    }
}

/// Process `pid`'s usage now; `None` once it is gone.
pub(crate) fn usage(pid: u32) -> Option<Usage> {
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Usage { fds, rss_kib })
}

/// How much `later` grew over `earlier`: (fds, KiB), negative when it shrank.
pub(crate) fn growth(earlier: Usage, later: Usage) -> (i64, i64) {
    (
        later.fds as i64 - earlier.fds as i64,
        later.rss_kib as i64 - earlier.rss_kib as i64,
    )
}

/// The lines of `log` that tell of a panic (Rust's "panicked at", and "panic" anywhere,
/// whatever the case, so that a logged panic message is caught too).
pub(crate) fn panic_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.to_ascii_lowercase().contains("panic"))
        .map(str::to_owned)
        .collect()
}
