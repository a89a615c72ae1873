//! The systemd notification protocol (`sd_notify(3)`) without libsystemd: readiness,
//! status, stopping and watchdog messages, as datagrams to the socket `$NOTIFY_SOCKET`
//! names.
//!
//! systemd starts a `Type=notify` service with `NOTIFY_SOCKET` (a path, or `@name` for a
//! socket in the abstract namespace) and, with `WatchdogSec=`, `WATCHDOG_USEC` (the
//! watchdog's period in microseconds) and `WATCHDOG_PID` (the process meant). The service
//! sends newline-separated `KEY=VALUE` assignments in single datagrams: `READY=1` once it
//! serves, `STATUS=...` for `systemctl status`, `STOPPING=1` when it begins to stop,
//! `WATCHDOG=1` at least once per period (half of it, as `sd_watchdog_enabled(3)` advises).
//!
//! The layout:
//!
//! - Sans-IO, tested here without a socket: [`message`] builds a datagram from [`State`]s;
//!   [`Target::parse`] reads `NOTIFY_SOCKET`; [`watchdog_interval`] reads the two watchdog
//!   variables and says how often to ping, or not at all.
//! - The thin sender: a [`Notifier`] holds an unbound, non-blocking Unix datagram socket
//!   and the target. Without `NOTIFY_SOCKET` it is disabled and every call is a no-op, so
//!   the daemons call it unconditionally. [`Notifier::heartbeat`] gives the watchdog ping
//!   as a [`Heartbeat`] for the daemon's main loop to poll: the ping comes from that loop,
//!   so a hung loop stops pinging and systemd restarts the service (the node's engine loop,
//!   the manager's core loop, viscript's ticker).
//!
//! Rules the daemons keep (`src/node.rs`, `src/mesh.rs`, `src/viscript.rs`):
//!
//! - `READY=1` only once the daemon really serves: for the node, once its TUN device is up
//!   with its addresses, its UDP socket bound, its configured routes in the kernel, its
//!   control socket listening and its engine loop answering.
//! - `STOPPING=1` when the daemon begins to stop; from then on [`Notifier::heartbeat`]'s
//!   pings are not sent, so the messages arrive in their order (ready, pings, stopping).
//! - Children do not inherit the variables ([`ENV_VARS`]: viscript's apps are started
//!   without them), so an app never speaks for viscript's unit.
//!
//! Nothing here fails a daemon: a send that fails (systemd gone, its socket full) is logged
//! once and the daemon carries on; the watchdog then tells systemd what it needs to know.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use skywire_dataplane::engine::Heartbeat;

/// The socket to notify, set by systemd for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The watchdog's period in microseconds, set by systemd with `WatchdogSec=`.
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The process the watchdog is meant for; another process must not ping.
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";
/// The variables a daemon's children must not inherit (see the module docs).
pub const ENV_VARS: [&str; 3] = [NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID];

/// The longest `STATUS=` text sent, in bytes; longer text is cut at a character boundary.
pub const MAX_STATUS: usize = 512;

/// Why notifications could not be set up or sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` is neither an absolute path nor `@name`.
    #[error(
        "{NOTIFY_SOCKET}={value:?}: not an absolute path or an @abstract name (other kinds, \
         such as vsock, are not supported)"
    )]
    BadSocket {
        /// The value as given (lossily, for the message).
        value: String,
    },
    /// `WATCHDOG_USEC` is not a number of microseconds.
    #[error("{WATCHDOG_USEC}={value:?}: not a number of microseconds")]
    BadWatchdogUsec {
        /// The value as given.
        value: String,
    },
    /// `WATCHDOG_PID` is not a process id.
    #[error("{WATCHDOG_PID}={value:?}: not a process id")]
    BadWatchdogPid {
        /// The value as given.
        value: String,
    },
    /// The datagram socket could not be made.
    #[error("cannot make a socket to notify systemd: {0}")]
    Socket(#[source] io::Error),
    /// A notification could not be sent.
    #[error("cannot notify systemd at {target}: {source}")]
    Send {
        /// Where it was sent.
        target: Target,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

/// One assignment of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State<'a> {
    /// `READY=1`: start-up is finished, the service serves.
    Ready,
    /// `RELOADING=1`: the service reloads its configuration; `READY=1` follows when done.
    Reloading,
    /// `STOPPING=1`: the service begins to stop.
    Stopping,
    /// `WATCHDOG=1`: the service is alive.
    Watchdog,
    /// `STATUS=...`: one line for `systemctl status` (newlines become spaces, at most
    /// [`MAX_STATUS`] bytes).
    Status(&'a str),
}

/// The datagram for `states`: one `KEY=VALUE` line each, in order. A status text cannot
/// add assignments of its own: its line breaks become spaces.
pub fn message(states: &[State<'_>]) -> String {
    let mut text = String::new();
    for state in states {
        match state {
            State::Ready => text.push_str("READY=1"),
            State::Reloading => text.push_str("RELOADING=1"),
            State::Stopping => text.push_str("STOPPING=1"),
            State::Watchdog => text.push_str("WATCHDOG=1"),
            State::Status(status) => {
                text.push_str("STATUS=");
                let mut end = status.len().min(MAX_STATUS);
                while !status.is_char_boundary(end) {
                    end -= 1;
                }
                let cut = status.get(..end).unwrap_or_default();
                text.extend(cut.chars().map(|c| if c.is_control() { ' ' } else { c }));
            }
        }
        text.push('\n');
    }
    text
}

/// Where notifications go: `NOTIFY_SOCKET` read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A socket file.
    Path(PathBuf),
    /// A socket in the abstract namespace (`@name`; the name without the `@`).
    Abstract(Vec<u8>),
}

impl Target {
    /// Read a `NOTIFY_SOCKET` value: `/absolute/path` or `@abstract-name`.
    pub fn parse(value: &OsStr) -> Result<Self, NotifyError> {
        let bytes = value.as_bytes();
        let bad = || NotifyError::BadSocket {
            value: value.to_string_lossy().into_owned(),
        };
        match bytes {
            [b'/', ..] => Ok(Self::Path(PathBuf::from(value))),
            [b'@', name @ ..] if !name.is_empty() => Ok(Self::Abstract(name.to_vec())),
            _ => Err(bad()),
        }
    }

    /// The address to send to.
    fn address(&self) -> io::Result<SocketAddr> {
        match self {
            Self::Path(path) => SocketAddr::from_pathname(path),
            Self::Abstract(name) => SocketAddr::from_abstract_name(name),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Path(path) => write!(f, "{}", path.display()),
            Self::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
        }
    }
}

/// How often to ping the watchdog, from `WATCHDOG_USEC` and `WATCHDOG_PID` as given (or
/// absent) and this process's id: half the period, as `sd_watchdog_enabled(3)` advises;
/// `None` when there is no watchdog (`WATCHDOG_USEC` absent or 0) or it is meant for
/// another process (`WATCHDOG_PID` names another pid: a child that inherited the
/// variables must not ping for its parent).
pub fn watchdog_interval(
    usec: Option<&OsStr>,
    pid: Option<&OsStr>,
    own_pid: u32,
) -> Result<Option<Duration>, NotifyError> {
    let Some(usec) = usec else {
        return Ok(None);
    };
    let text = |value: &OsStr| value.to_string_lossy().into_owned();
    let period: u64 = usec
        .to_str()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| NotifyError::BadWatchdogUsec { value: text(usec) })?;
    if let Some(pid) = pid {
        let meant: u32 = pid
            .to_str()
            .and_then(|s| s.trim().parse().ok())
            .filter(|&p| p > 0)
            .ok_or_else(|| NotifyError::BadWatchdogPid { value: text(pid) })?;
        if meant != own_pid {
            return Ok(None);
        }
    }
    if period == 0 {
        return Ok(None);
    }
    Ok(Some(Duration::from_micros(period / 2)))
}

/// Sends notifications to systemd, or nothing when not started by it; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    socket: UnixDatagram,
    target: Target,
    address: SocketAddr,
    /// How often to ping the watchdog; `None` without one.
    watchdog: Option<Duration>,
    /// Set by [`Notifier::stopping`]; held while a ping is sent, so no ping follows
    /// `STOPPING=1`.
    stopping: Mutex<bool>,
    /// A failed send was logged already.
    warned: AtomicBool,
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// A notifier from this process's environment (`NOTIFY_SOCKET`, `WATCHDOG_USEC`,
    /// `WATCHDOG_PID`); disabled without `NOTIFY_SOCKET`.
    pub fn from_env() -> Result<Self, NotifyError> {
        let var = std::env::var_os;
        Self::from_values(
            var(NOTIFY_SOCKET).as_deref(),
            var(WATCHDOG_USEC).as_deref(),
            var(WATCHDOG_PID).as_deref(),
            std::process::id(),
        )
    }

    /// A notifier from the variables' values (absent: `None`) and this process's id.
    pub fn from_values(
        socket: Option<&OsStr>,
        watchdog_usec: Option<&OsStr>,
        watchdog_pid: Option<&OsStr>,
        own_pid: u32,
    ) -> Result<Self, NotifyError> {
        let Some(socket) = socket.filter(|s| !s.is_empty()) else {
            return Ok(Self::disabled());
        };
        let target = Target::parse(socket)?;
        let watchdog = watchdog_interval(watchdog_usec, watchdog_pid, own_pid)?;
        let address = target.address().map_err(|_| NotifyError::BadSocket {
            value: socket.to_string_lossy().into_owned(),
        })?;
        let datagram = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
        // Never block a daemon's loop on systemd: a full queue loses that one message.
        datagram
            .set_nonblocking(true)
            .map_err(NotifyError::Socket)?;
        Ok(Self {
            inner: Some(Arc::new(Inner {
                socket: datagram,
                target,
                address,
                watchdog,
                stopping: Mutex::new(false),
                warned: AtomicBool::new(false),
            })),
        })
    }

    /// Whether notifications are sent at all (`NOTIFY_SOCKET` was set).
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// How often the watchdog wants a ping; `None` without a watchdog for this process.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.inner.as_ref().and_then(|inner| inner.watchdog)
    }

    /// Send `states` in one datagram (nothing when disabled).
    pub fn notify(&self, states: &[State<'_>]) -> Result<(), NotifyError> {
        match &self.inner {
            Some(inner) => inner.send(&message(states)),
            None => Ok(()),
        }
    }

    /// `READY=1` with a `STATUS=` line.
    pub fn ready(&self, status: &str) -> Result<(), NotifyError> {
        self.notify(&[State::Ready, State::Status(status)])
    }

    /// `RELOADING=1` with a `STATUS=` line; send [`Notifier::ready`] when done.
    pub fn reloading(&self, status: &str) -> Result<(), NotifyError> {
        self.notify(&[State::Reloading, State::Status(status)])
    }

    /// `STOPPING=1` with a `STATUS=` line, once: later calls send nothing, and neither do
    /// the [`heartbeat`](Self::heartbeat)'s pings from then on.
    pub fn stopping(&self, status: &str) -> Result<(), NotifyError> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let mut stopping = inner
            .stopping
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *stopping {
            return Ok(());
        }
        *stopping = true;
        inner.send(&message(&[State::Stopping, State::Status(status)]))
    }

    /// The watchdog's ping as a [`Heartbeat`] at the watchdog's interval, for the daemon's
    /// main loop to poll; `None` without a watchdog. A failed ping is logged once.
    pub fn heartbeat(&self) -> Option<Heartbeat> {
        let inner = Arc::clone(self.inner.as_ref()?);
        let every = inner.watchdog?;
        let ping = message(&[State::Watchdog]);
        Some(Heartbeat::new(every, move || {
            let stopping = inner
                .stopping
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !*stopping {
                inner.send_or_warn(&ping);
            }
        }))
    }

    /// Log a failed notification as a warning (once per notifier): the daemon carries on.
    pub fn warn(&self, result: Result<(), NotifyError>) {
        if let (Err(error), Some(inner)) = (result, &self.inner)
            && !inner.warned.swap(true, Ordering::Relaxed)
        {
            log::warn!("skywire: {error} (said once)");
        }
    }
}

impl Inner {
    fn send(&self, message: &str) -> Result<(), NotifyError> {
        self.socket
            .send_to_addr(message.as_bytes(), &self.address)
            .map(drop)
            .map_err(|source| NotifyError::Send {
                target: self.target.clone(),
                source,
            })
    }

    fn send_or_warn(&self, message: &str) {
        if let Err(error) = self.send(message)
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            log::warn!("skywire: {error} (said once)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::time::Instant;

    fn os(text: &str) -> OsString {
        OsString::from(text)
    }

    #[test]
    fn messages_are_one_assignment_per_line() {
        assert_eq!(message(&[State::Ready]), "READY=1\n");
        assert_eq!(
            message(&[State::Ready, State::Status("node abc: forwarding")]),
            "READY=1\nSTATUS=node abc: forwarding\n"
        );
        assert_eq!(message(&[State::Watchdog]), "WATCHDOG=1\n");
        assert_eq!(
            message(&[State::Stopping, State::Status("bye")]),
            "STOPPING=1\nSTATUS=bye\n"
        );
        assert_eq!(message(&[State::Reloading]), "RELOADING=1\n");
        assert_eq!(message(&[]), "");
    }

    #[test]
    fn a_status_cannot_smuggle_an_assignment_and_is_bounded() {
        let text = message(&[State::Status("ok\nREADY=1\r\x1b[2J")]);
        assert_eq!(text, "STATUS=ok READY=1  [2J\n");
        assert_eq!(text.lines().count(), 1);
        // Cut at a character boundary, never inside one.
        let long = "é".repeat(MAX_STATUS);
        let text = message(&[State::Status(&long)]);
        let value = text.strip_prefix("STATUS=").unwrap().trim_end_matches('\n');
        assert!(value.len() <= MAX_STATUS, "{}", value.len());
        assert!(value.len() >= MAX_STATUS - 1);
        assert!(value.chars().all(|c| c == 'é'));
    }

    #[test]
    fn the_socket_variable_is_a_path_or_an_abstract_name() {
        assert_eq!(
            Target::parse(&os("/run/systemd/notify")).unwrap(),
            Target::Path(PathBuf::from("/run/systemd/notify"))
        );
        assert_eq!(
            Target::parse(&os("@/org/freedesktop/systemd1/notify/42")).unwrap(),
            Target::Abstract(b"/org/freedesktop/systemd1/notify/42".to_vec())
        );
        for bad in ["", "@", "relative/path", "vsock:2:1234"] {
            assert!(
                matches!(Target::parse(&os(bad)), Err(NotifyError::BadSocket { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            Target::Abstract(b"x".to_vec()).to_string(),
            "@x",
            "shown as the variable writes it"
        );
    }

    #[test]
    fn the_watchdog_pings_at_half_its_period_for_its_own_process_only() {
        let half = |usec: Option<&str>, pid: Option<&str>| {
            watchdog_interval(usec.map(os).as_deref(), pid.map(os).as_deref(), 4242)
        };
        assert_eq!(half(None, None).unwrap(), None);
        assert_eq!(
            half(Some("10000000"), None).unwrap(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            half(Some("10000000"), Some("4242")).unwrap(),
            Some(Duration::from_secs(5))
        );
        // Meant for another process (a child that inherited the variables): no pings.
        assert_eq!(half(Some("10000000"), Some("1")).unwrap(), None);
        // 0 means no watchdog.
        assert_eq!(half(Some("0"), None).unwrap(), None);
        for (usec, pid) in [
            (Some("ten"), None),
            (Some("-1"), None),
            (Some(""), None),
            (Some("10"), Some("0")),
            (Some("10"), Some("x")),
        ] {
            assert!(half(usec, pid).is_err(), "{usec:?} {pid:?}");
        }
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_nothing_fails() {
        let notifier = Notifier::from_values(None, Some(&os("1000000")), None, 1).unwrap();
        assert!(!notifier.is_enabled());
        assert!(notifier.heartbeat().is_none());
        notifier.ready("x").unwrap();
        notifier.stopping("x").unwrap();
        let empty = Notifier::from_values(Some(&os("")), None, None, 1).unwrap();
        assert!(!empty.is_enabled());
    }

    fn listener(dir: &std::path::Path) -> (UnixDatagram, PathBuf) {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (socket, path)
    }

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("skywire-notify-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn datagrams_reach_a_listener_in_order_and_no_ping_follows_stopping() {
        let dir = scratch("order");
        let (socket, path) = listener(&dir);
        let notifier = Notifier::from_values(
            Some(path.as_os_str()),
            Some(&os("2000000")),
            Some(&os(&std::process::id().to_string())),
            std::process::id(),
        )
        .unwrap();
        assert_eq!(notifier.watchdog_interval(), Some(Duration::from_secs(1)));
        notifier.ready("serving").unwrap();
        assert_eq!(receive(&socket), "READY=1\nSTATUS=serving\n");
        let mut heartbeat = notifier.heartbeat().unwrap();
        assert_eq!(heartbeat.every(), Duration::from_secs(1));
        let t0 = Instant::now();
        assert!(heartbeat.poll(t0));
        assert_eq!(receive(&socket), "WATCHDOG=1\n");
        notifier.stopping("stopping").unwrap();
        notifier.stopping("again").unwrap();
        assert!(heartbeat.poll(t0 + Duration::from_secs(2)));
        assert_eq!(receive(&socket), "STOPPING=1\nSTATUS=stopping\n");
        // Neither the second STOPPING nor the ping after it was sent.
        socket.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(
            socket.recv(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_abstract_socket_is_reached_and_a_missing_one_is_an_error_not_a_panic() {
        let name = format!("skywire-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&address).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let notifier =
            Notifier::from_values(Some(&os(&format!("@{name}"))), None, None, 1).unwrap();
        assert!(notifier.heartbeat().is_none(), "no watchdog asked for");
        notifier.ready("abstract").unwrap();
        assert_eq!(receive(&socket), "READY=1\nSTATUS=abstract\n");
        drop(socket);
        let error = notifier.ready("gone").unwrap_err();
        assert!(matches!(error, NotifyError::Send { .. }), "{error:?}");
        assert!(error.to_string().contains(&format!("@{name}")), "{error}");
    }
}
