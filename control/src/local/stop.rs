//! Stopping a server's blocked threads at once: a [`StopSignal`] is a flag and an eventfd.
//!
//! An accept loop waits in `poll(2)` on its listener and on the signal's eventfd together
//! ([`StopSignal::wait_readable`]), so a connection is accepted the moment it arrives and
//! [`StopSignal::stop`] ends the wait the moment it is called: no polling interval, no
//! wake-ups while idle. The eventfd is written once and never read, so it stays readable:
//! any number of threads, waiting now or later, see the stop (the node's control socket
//! and app socket share one).
//!
//! The flag decides ([`StopSignal::is_stopped`], looked at before and after every wait);
//! the eventfd only wakes. Adding 1 to its counter cannot fail short of 2^64 stops, so a
//! waiter with no timeout is never left asleep.

use core::time::Duration;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec, eventfd, poll};
use rustix::io::Errno;

/// How long an accept loop waits after a failed accept before it tries again.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// A failing accept loop logs at most one line this often.
pub const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// When a failing accept loop speaks: at most one warning every
/// [`ACCEPT_ERROR_LOG_INTERVAL`], saying how many failures went unlogged since the last,
/// whether the failures come in one run or many short ones (a descriptor freed now and
/// then lets one accept through); and, at the first success after a run that had a
/// warning, one line saying it is over. Sans-IO: it takes `now`.
#[derive(Debug, Default)]
pub struct AcceptErrors {
    /// The current run of failures: when it began, its length, and whether it was logged.
    run: Option<(Instant, u64, bool)>,
    /// When the last warning was logged, and the failures since.
    logged: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    /// An accept failed at `now`: `Some(failures not logged since the last warning)` when
    /// a warning is due.
    pub fn failed(&mut self, now: Instant) -> Option<u64> {
        let (_, failures, run_logged) = self.run.get_or_insert((now, 0, false));
        *failures += 1;
        let due = self
            .logged
            .is_none_or(|at| now.saturating_duration_since(at) >= ACCEPT_ERROR_LOG_INTERVAL);
        if due {
            *run_logged = true;
            let unlogged = self.unlogged;
            self.logged = Some(now);
            self.unlogged = 0;
            Some(unlogged)
        } else {
            self.unlogged += 1;
            None
        }
    }

    /// An accept succeeded at `now`: `Some((failures, how long they lasted))` if it ends a
    /// run of failures that was warned about.
    pub fn succeeded(&mut self, now: Instant) -> Option<(u64, Duration)> {
        match self.run.take()? {
            (since, failures, true) => Some((failures, now.saturating_duration_since(since))),
            _ => None,
        }
    }
}

/// A stop shared by the threads it ends; cheap to clone (see the module doc).
#[derive(Debug, Clone)]
pub struct StopSignal(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    stopped: AtomicBool,
    wake: OwnedFd,
}

/// How a [`StopSignal::wait_readable`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeup {
    /// The descriptor is readable (for a listener: a connection waits), or in error.
    Ready,
    /// [`StopSignal::stop`] was called.
    Stopped,
    /// The timeout passed first.
    TimedOut,
}

impl StopSignal {
    /// A signal not stopped yet. Fails only when no descriptor can be had.
    pub fn new() -> io::Result<Self> {
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Self(Arc::new(Inner {
            stopped: AtomicBool::new(false),
            wake,
        })))
    }

    /// Stop: every wait on this signal returns now, and every later one at once.
    pub fn stop(&self) {
        self.0.stopped.store(true, Ordering::Release);
        // Non-blocking; fails only if the counter would overflow, which 1 per stop never
        // makes it. The eventfd is readable from now on.
        let _ = rustix::io::write(&self.0.wake, &1u64.to_ne_bytes());
    }

    /// Whether [`Self::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.0.stopped.load(Ordering::Acquire)
    }

    /// Wait until `fd` is readable, the signal is stopped, or `timeout` passes (`None`:
    /// no timeout). A stop wins over a readable `fd`.
    pub fn wait_readable(&self, fd: BorrowedFd<'_>, timeout: Option<Duration>) -> Wakeup {
        self.wait(Some(fd), timeout)
    }

    /// Accept connections until the signal is stopped: `accept` (on the non-blocking
    /// `listener`) is tried whenever `listener` is readable, and what it returns goes to
    /// `serve`. Nothing to accept waits in `poll(2)`; a failed accept (`EMFILE`, a peer
    /// that went away) waits [`ACCEPT_RETRY`] or until the stop, and one bad moment never
    /// ends the loop. Failures are logged as warnings naming `what` (the socket), at most
    /// one line every [`ACCEPT_ERROR_LOG_INTERVAL`] ([`AcceptErrors`]), and the recovery
    /// once more. Returns once stopped, within a `poll` wake-up of [`Self::stop`].
    pub fn accept_until_stopped<T>(
        &self,
        what: &str,
        listener: BorrowedFd<'_>,
        mut accept: impl FnMut() -> io::Result<T>,
        mut serve: impl FnMut(T),
    ) {
        let mut errors = AcceptErrors::default();
        while !self.is_stopped() {
            match accept() {
                Ok(accepted) => {
                    if let Some((failures, over)) = errors.succeeded(Instant::now()) {
                        log::info!(
                            "{what}: accepting connections again, after {failures} failed \
                             accepts over {:.1} s",
                            over.as_secs_f64()
                        );
                    }
                    serve(accepted);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.wait_readable(listener, None) == Wakeup::Stopped {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The listener stays readable while, say, descriptors run out: wait a
                // little rather than spin.
                Err(e) => {
                    if let Some(unlogged) = errors.failed(Instant::now()) {
                        let more = if unlogged > 0 {
                            format!(" ({unlogged} more failures since the last line)")
                        } else {
                            String::new()
                        };
                        log::warn!(
                            "{what}: cannot accept a connection: {e}{more}; retrying every \
                             {} ms{}",
                            ACCEPT_RETRY.as_millis(),
                            if e.raw_os_error() == Some(libc::EMFILE) {
                                " (the node's limit of open files, `ulimit -n`, is reached; \
                                 clients wait until descriptors are freed)"
                            } else {
                                ""
                            }
                        );
                    }
                    if self.sleep(ACCEPT_RETRY) {
                        return;
                    }
                }
            }
        }
    }

    /// Sleep `duration`, or less if the signal is stopped meanwhile; true if it was.
    pub fn sleep(&self, duration: Duration) -> bool {
        self.wait(None, Some(duration)) == Wakeup::Stopped
    }

    fn wait(&self, fd: Option<BorrowedFd<'_>>, timeout: Option<Duration>) -> Wakeup {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if self.is_stopped() {
                return Wakeup::Stopped;
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Wakeup::TimedOut;
            }
            let left = left.map(|l| Timespec::try_from(l).unwrap_or_default());
            let wake = PollFd::new(&self.0.wake, PollFlags::IN);
            let mut both;
            let mut alone;
            let fds: &mut [PollFd<'_>] = match fd {
                Some(fd) => {
                    both = [wake, PollFd::from_borrowed_fd(fd, PollFlags::IN)];
                    &mut both
                }
                None => {
                    alone = [wake];
                    &mut alone
                }
            };
            match poll(fds, left.as_ref()) {
                Ok(0) | Err(Errno::INTR) => {}
                Ok(_) => {
                    if self.is_stopped() {
                        return Wakeup::Stopped;
                    }
                    if fds.get(1).is_some_and(|f| !f.revents().is_empty()) {
                        return Wakeup::Ready;
                    }
                }
                // EINVAL or ENOMEM: nothing sensible to wait on; let the caller try its
                // operation (it will fail and back off with `sleep`).
                Err(_) => return Wakeup::Ready,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::os::fd::AsFd;
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::thread;

    use super::*;

    #[test]
    fn accept_failures_are_logged_once_per_interval_and_their_end_once() {
        let mut errors = AcceptErrors::default();
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // 25 s of EMFILE, a try every 50 ms: warnings at 0, 10 and 20 s.
        let lines: Vec<(u64, u64)> = (0..500)
            .filter_map(|i| errors.failed(at(i * 50)).map(|unlogged| (i * 50, unlogged)))
            .collect();
        assert_eq!(lines, [(0, 0), (10_000, 199), (20_000, 199)]);
        assert_eq!(
            errors.succeeded(at(25_000)),
            Some((500, Duration::from_secs(25)))
        );
        // A success after a success says nothing.
        assert_eq!(errors.succeeded(at(25_050)), None);
        // Flapping (a freed descriptor lets one accept through, then EMFILE again): still
        // one warning per interval, and no "over" line for a run that was not warned of.
        assert_eq!(errors.failed(at(26_000)), None);
        assert_eq!(errors.succeeded(at(26_050)), None);
        assert_eq!(errors.failed(at(29_000)), None);
        // 99 unlogged after 20 s, and the two since.
        assert_eq!(errors.failed(at(30_000)), Some(101));
        assert_eq!(errors.succeeded(at(30_050)).map(|(n, _)| n), Some(2));
    }

    #[test]
    fn a_stop_wakes_a_waiter_at_once_and_every_later_one() {
        let (listener, _peer) = UnixStream::pair().unwrap();
        let stop = StopSignal::new().unwrap();
        let waiter = {
            let stop = stop.clone();
            thread::spawn(move || {
                let started = Instant::now();
                let woke = stop.wait_readable(listener.as_fd(), None);
                (woke, started.elapsed())
            })
        };
        thread::sleep(Duration::from_millis(50));
        stop.stop();
        let (woke, waited) = waiter.join().unwrap();
        assert_eq!(woke, Wakeup::Stopped);
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        assert!(stop.is_stopped());
        assert!(stop.sleep(Duration::from_secs(10)));
        assert!(stop.clone().sleep(Duration::from_secs(10)));
    }

    #[test]
    fn a_connection_wakes_an_accept_wait() {
        let dir = std::env::temp_dir().join(format!("skywire-stop-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let stop = StopSignal::new().unwrap();
        assert_eq!(
            stop.wait_readable(listener.as_fd(), Some(Duration::from_millis(20))),
            Wakeup::TimedOut
        );
        let _client = UnixStream::connect(&path).unwrap();
        assert_eq!(
            stop.wait_readable(listener.as_fd(), Some(Duration::from_secs(10))),
            Wakeup::Ready
        );
        assert!(listener.accept().is_ok());
        assert!(!stop.sleep(Duration::from_millis(1)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
