//! The signal client library: how a component (a `skywire` subcommand, or any Rust
//! program) lets viscript ping, inspect and shut it down.
//!
//! - **Configuration** ([`ClientConfig`]): from the environment (`SIGNAL_CLIENT`,
//!   `SIGNAL_CLIENT_ID`, `SIGNAL_SERVER_ADDRESS` and `SIGNAL_CLIENT_SECRET`, which viscript
//!   sets for every app it starts) or, except for the secret, from the original flags
//!   (`-signal-client`, `-signal-client-id N`, `-signal-server-address A`, one or two
//!   dashes, `=` or a separate value). A flag wins over the variable. The secret has no
//!   flag on purpose: a command line is visible to every user in `ps`, an environment
//!   only to the process's own user and root. [`ClientConfig::from_env_and_args`]
//!   removes the flags it used from the argument list, so the program's own parser never
//!   sees them; it stops looking at `--`.
//! - **Running** ([`spawn`]): one thread connects, waits for the server's `Hello`,
//!   registers with a proof of the secret, and checks the server's proof in the echo
//!   ([`super::auth`]). Only then does it answer `Top` (this process's figures from
//!   `/proc/self`), `Ping` and `Shutdown` (replies `{"Pid": n}`, then calls the
//!   program's shutdown hook). A server that cannot prove it knows the secret (a process
//!   listening where viscript was) is obeyed in nothing: the connection is closed and the
//!   program's warning hook told, once until a registration succeeds. When the connection
//!   fails or closes the client reconnects after a delay that doubles from 100 ms up to
//!   30 s ([`Backoff`]), reset by a successful registration.
//!
//! The client never makes its program fail: a server that is absent or misbehaves only
//! means the client keeps trying.

use std::ffi::OsString;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::auth::{AuthError, ClientAuth, Nonce, Secret, SecretError, Step};
use super::frame::{Decoder, Frame, op};
use crate::procfs;

/// The server's address when none is configured: the original port, on loopback.
pub const DEFAULT_SERVER: &str = "127.0.0.1:7999";

/// The environment variables that configure a client (viscript sets all four).
pub mod vars {
    /// Be a client: any value but empty, `false` and `0`.
    pub const CLIENT: &str = "SIGNAL_CLIENT";
    /// The id to register with.
    pub const ID: &str = "SIGNAL_CLIENT_ID";
    /// The server's `host:port`.
    pub const SERVER: &str = "SIGNAL_SERVER_ADDRESS";
    /// The app's secret, 64 hex digits (never on the command line).
    pub const SECRET: &str = "SIGNAL_CLIENT_SECRET";
}

/// A client configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientConfigError {
    /// The id is not an unsigned integer.
    #[error(
        "signal client id `{0}` is not an unsigned integer (SIGNAL_CLIENT_ID or -signal-client-id)"
    )]
    BadId(String),
    /// A flag that takes a value is last on the command line.
    #[error("{0} needs a value")]
    MissingValue(String),
    /// `SIGNAL_CLIENT_SECRET` is not 64 hex digits.
    #[error(transparent)]
    BadSecret(#[from] SecretError),
}

/// Whether and how to be a signal client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Be a client at all.
    pub enabled: bool,
    /// The id to register with (viscript's sequence id).
    pub id: u64,
    /// `host:port` of the server.
    pub server: String,
    /// The app's secret (from the environment only).
    pub secret: Option<Secret>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            id: 1,
            server: DEFAULT_SERVER.to_owned(),
            secret: None,
        }
    }
}

/// Whether a `SIGNAL_CLIENT` value (or `-signal-client=` value) enables the client: any
/// text but empty, `false` and `0`.
fn enables(value: &str) -> bool {
    !matches!(value.trim(), "" | "false" | "0")
}

impl ClientConfig {
    /// From the environment only.
    pub fn from_env() -> Result<Self, ClientConfigError> {
        Self::from_env_and_args(Vec::new()).map(|(config, _)| config)
    }

    /// From the environment and the signal flags in `args`; returns the config and `args`
    /// without those flags (the first element, the program name, is kept as it is).
    pub fn from_env_and_args(
        args: impl IntoIterator<Item = OsString>,
    ) -> Result<(Self, Vec<OsString>), ClientConfigError> {
        Self::from_lookup(|key| std::env::var(key).ok(), args)
    }

    /// [`Self::from_env_and_args`] with the variables from `env`.
    pub fn from_lookup(
        env: impl Fn(&str) -> Option<String>,
        args: impl IntoIterator<Item = OsString>,
    ) -> Result<(Self, Vec<OsString>), ClientConfigError> {
        let mut config = Self::default();
        if let Some(value) = env(vars::CLIENT) {
            config.enabled = enables(&value);
        }
        if let Some(value) = env(vars::ID) {
            config.id = value
                .trim()
                .parse()
                .map_err(|_| ClientConfigError::BadId(value))?;
        }
        if let Some(value) = env(vars::SERVER)
            && !value.trim().is_empty()
        {
            config.server = value.trim().to_owned();
        }
        if let Some(value) = env(vars::SECRET)
            && !value.trim().is_empty()
        {
            config.secret = Some(Secret::from_hex(&value)?);
        }
        let mut rest = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--" {
                // Everything after `--` belongs to the program (or to its own apps).
                rest.push(arg);
                rest.extend(args);
                break;
            }
            let Some(text) = arg.to_str() else {
                rest.push(arg);
                continue;
            };
            let bare = text.strip_prefix("--").or_else(|| text.strip_prefix('-'));
            let Some(bare) = bare.filter(|b| b.starts_with("signal-")) else {
                rest.push(arg);
                continue;
            };
            let (name, inline) = match bare.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (bare, None),
            };
            let mut value = |flag: &str| -> Result<String, ClientConfigError> {
                match &inline {
                    Some(v) => Ok(v.clone()),
                    None => args
                        .next()
                        .and_then(|v| v.into_string().ok())
                        .ok_or_else(|| ClientConfigError::MissingValue(flag.to_owned())),
                }
            };
            match name {
                "signal-client" => config.enabled = inline.as_deref().is_none_or(enables),
                "signal-client-id" => {
                    let v = value(text)?;
                    config.id = v.trim().parse().map_err(|_| ClientConfigError::BadId(v))?;
                }
                "signal-server-address" => config.server = value(text)?,
                _ => rest.push(arg),
            }
        }
        Ok((config, rest))
    }
}

/// Reconnection delays: doubling from `initial` up to `max`; [`Backoff::reset`] after a
/// success. Sans-IO.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Delays from `initial`, doubling, never above `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay to wait now; the one after is twice as long (up to the maximum).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// Start again from the initial delay.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// What the program does on `Shutdown`, after the reply is sent.
pub type ShutdownHook = Box<dyn Fn() + Send>;

/// What the program does when a server fails to authenticate (to tell its user): called
/// once for each new failure, not again for the same one until a registration succeeds.
pub type WarningHook = Box<dyn Fn(&AuthError) + Send>;

/// Why the client cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// There is no `SIGNAL_CLIENT_SECRET`: nothing to prove to a server, and no way to
    /// tell viscript from a process that took its address.
    #[error(
        "SIGNAL_CLIENT_SECRET is not set (viscript sets it with SIGNAL_CLIENT; there is no flag for it)"
    )]
    NoSecret,
    /// The thread could not be started.
    #[error("cannot start the signal client thread: {0}")]
    Thread(#[from] io::Error),
}

/// A running client; dropping it leaves the thread running (call [`ClientHandle::stop`]).
#[derive(Debug)]
pub struct ClientHandle {
    stop: Arc<AtomicBool>,
    registered: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ClientHandle {
    /// Whether the client is registered with the server right now.
    pub fn is_registered(&self) -> bool {
        self.registered.load(Ordering::Relaxed)
    }

    /// Stop the client and wait for its thread (within about 200 ms).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How often the connection thread wakes to check for `stop`.
const POLL: Duration = Duration::from_millis(200);

/// How long the opening (`Hello`, `Reg`, the echo) may take.
const OPENING: Duration = Duration::from_secs(5);

/// The hooks and flags the connection thread shares with its program.
struct Shared {
    on_shutdown: ShutdownHook,
    on_warning: WarningHook,
    stop: Arc<AtomicBool>,
    registered: Arc<AtomicBool>,
}

/// Start the client thread for `config` (which should be enabled and have a secret).
/// `on_shutdown` runs when the server asks this program to shut down; `on_warning` when a
/// server fails to authenticate.
pub fn spawn(
    config: ClientConfig,
    on_shutdown: ShutdownHook,
    on_warning: WarningHook,
) -> Result<ClientHandle, SpawnError> {
    let secret = config.secret.clone().ok_or(SpawnError::NoSecret)?;
    let shared = Shared {
        on_shutdown,
        on_warning,
        stop: Arc::new(AtomicBool::new(false)),
        registered: Arc::new(AtomicBool::new(false)),
    };
    let (stop, registered) = (Arc::clone(&shared.stop), Arc::clone(&shared.registered));
    let thread = thread::Builder::new()
        .name("signal-client".to_owned())
        .spawn(move || run(&config, &secret, &shared))?;
    Ok(ClientHandle {
        stop,
        registered,
        thread: Some(thread),
    })
}

/// How one connection ended.
enum Ended {
    /// Closed, failed or timed out: try again later.
    Io,
    /// The server did not authenticate: tell the program, try again later.
    Auth(AuthError),
}

impl From<io::Error> for Ended {
    fn from(_: io::Error) -> Self {
        Self::Io
    }
}

impl From<AuthError> for Ended {
    fn from(error: AuthError) -> Self {
        Self::Auth(error)
    }
}

/// Connect, serve, reconnect, until `stop`.
fn run(config: &ClientConfig, secret: &Secret, shared: &Shared) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
    let mut warned: Option<AuthError> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        if let Ok(stream) = connect(&config.server) {
            let ended = serve(&stream, config, secret, shared, &mut backoff, &mut warned);
            shared.registered.store(false, Ordering::Relaxed);
            // Warn before closing, so whoever sees the connection end sees the warning.
            if let Err(Ended::Auth(error)) = ended
                && warned.as_ref() != Some(&error)
            {
                (shared.on_warning)(&error);
                warned = Some(error);
            }
            let _ = stream.shutdown(Shutdown::Both);
        }
        let until = Instant::now() + backoff.next_delay();
        while !shared.stop.load(Ordering::Relaxed) && Instant::now() < until {
            thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
        }
    }
}

fn connect(server: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(ErrorKind::NotFound, "no address");
    for addr in server.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// One connection: the opening, then answer requests until it ends.
fn serve(
    stream: &TcpStream,
    config: &ClientConfig,
    secret: &Secret,
    shared: &Shared,
    backoff: &mut Backoff,
    warned: &mut Option<AuthError>,
) -> Result<(), Ended> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut writer = stream;
    let send = |w: &mut &TcpStream, frame: &Frame| -> io::Result<()> {
        let bytes = frame
            .encode()
            .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
        w.write_all(&bytes)
    };
    let pid = std::process::id();
    let nonce = Nonce::random().map_err(io::Error::other)?;
    let mut auth = ClientAuth::new(config.id, pid, secret.clone(), nonce);
    let mut authenticated = false;
    let opened = Instant::now();
    let mut decoder = Decoder::new();
    let mut buf = [0u8; 4096];
    let mut reader = stream;
    while !shared.stop.load(Ordering::Relaxed) {
        if !authenticated && opened.elapsed() > OPENING {
            return Err(Ended::Io);
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        decoder.push(buf.get(..n).unwrap_or_default());
        while let Some(frame) = decoder
            .next_frame()
            .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?
        {
            if !authenticated {
                // Nothing is obeyed before the server has proved it knows the secret.
                match auth.handle(&frame)? {
                    Step::Send(registration) => send(&mut writer, &registration)?,
                    Step::Authenticated => {
                        authenticated = true;
                        shared.registered.store(true, Ordering::Relaxed);
                        backoff.reset();
                        *warned = None;
                    }
                }
                continue;
            }
            if frame.is_reply() {
                continue; // this client makes no requests after registering
            }
            match frame.op {
                op::TOP => send(&mut writer, &frame.reply(own_figures()))?,
                op::PING => send(&mut writer, &frame.reply(Value::Null))?,
                op::SHUTDOWN => {
                    send(&mut writer, &frame.reply(json!({"Pid": pid})))?;
                    (shared.on_shutdown)();
                }
                _ => send(&mut writer, &frame.reply(json!({"Error": "unknown op"})))?,
            }
        }
    }
    Ok(())
}

/// This process's figures, as the `Top` reply.
pub fn own_figures() -> Value {
    let Some(sample) = procfs::read(std::process::id()) else {
        return json!({});
    };
    let u = sample.usage;
    #[allow(clippy::cast_precision_loss)] // tick counts far below 2^52
    let cpu = u
        .cpu_ticks
        .map(|t| t as f64 / procfs::CLOCK_TICKS_PER_SEC as f64);
    json!({
        "Pid": std::process::id(),
        "RssBytes": u.rss_bytes,
        "Threads": u.threads,
        "OpenFiles": u.open_files,
        "CpuSeconds": cpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn config(env: &[(&str, &str)], list: &[&str]) -> (ClientConfig, Vec<OsString>) {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ClientConfig::from_lookup(
            |key| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()),
            args(list),
        )
        .unwrap()
    }

    #[test]
    fn environment_and_flags_are_both_accepted() {
        let (c, rest) = config(&[], &["prog", "node"]);
        assert_eq!(c, ClientConfig::default());
        assert_eq!(rest, args(&["prog", "node"]));

        let (c, _) = config(
            &[
                ("SIGNAL_CLIENT", "true"),
                ("SIGNAL_CLIENT_ID", "7"),
                ("SIGNAL_SERVER_ADDRESS", "127.0.0.1:1234"),
            ],
            &["prog"],
        );
        assert_eq!(
            (c.enabled, c.id, c.server.as_str()),
            (true, 7, "127.0.0.1:1234")
        );
        let (c, _) = config(&[("SIGNAL_CLIENT", "false")], &["prog"]);
        assert!(!c.enabled);

        let (c, rest) = config(
            &[("SIGNAL_CLIENT_ID", "7")],
            &[
                "prog",
                "-signal-client",
                "node",
                "-signal-client-id",
                "9",
                "--signal-server-address=[::1]:5",
                "--config",
                "x",
            ],
        );
        assert_eq!((c.enabled, c.id, c.server.as_str()), (true, 9, "[::1]:5"));
        assert_eq!(rest, args(&["prog", "node", "--config", "x"]));
        let (c, rest) = config(&[], &["p", "exec", "--", "s", "app", "-signal-client"]);
        assert!(!c.enabled);
        assert_eq!(
            rest,
            args(&["p", "exec", "--", "s", "app", "-signal-client"])
        );
        let (c, _) = config(&[("SIGNAL_CLIENT", "1")], &["p", "-signal-client=false"]);
        assert!(!c.enabled);

        // The secret comes from the environment only; its Debug does not show it.
        let hex = "0f".repeat(32);
        let (c, rest) = config(
            &[("SIGNAL_CLIENT", "1"), ("SIGNAL_CLIENT_SECRET", &hex)],
            &["p", "-signal-client-secret", "x"],
        );
        assert_eq!(c.secret, Some(Secret::from_bytes([0x0f; 32])));
        assert_eq!(rest, args(&["p", "-signal-client-secret", "x"]));
        assert!(!format!("{c:?}").contains(&hex), "{c:?}");
    }

    #[test]
    fn bad_ids_and_missing_values_are_errors() {
        let lookup = |_: &str| Some("x".to_owned());
        assert_eq!(
            ClientConfig::from_lookup(lookup, args(&["p"])),
            Err(ClientConfigError::BadId("x".to_owned()))
        );
        assert_eq!(
            ClientConfig::from_lookup(|_| None, args(&["p", "-signal-client-id"])),
            Err(ClientConfigError::MissingValue(
                "-signal-client-id".to_owned()
            ))
        );
        let secret = "f".repeat(63);
        let error = ClientConfig::from_lookup(
            |key| (key == vars::SECRET).then(|| secret.clone()),
            args(&["p"]),
        )
        .unwrap_err();
        assert_eq!(error, ClientConfigError::BadSecret(SecretError::NotHex));
        assert!(!error.to_string().contains(&secret), "{error}");
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }
}
