//! The signal client library: how a component (a `skywire` subcommand, or any Rust
//! program) lets viscript ping, inspect and shut it down.
//!
//! - **Configuration** ([`ClientConfig`]): from the environment (`SIGNAL_CLIENT`,
//!   `SIGNAL_CLIENT_ID`, `SIGNAL_SERVER_ADDRESS`, which viscript sets for every app it
//!   starts) or from the original flags (`-signal-client`, `-signal-client-id N`,
//!   `-signal-server-address A`, one or two dashes, `=` or a separate value). A flag wins
//!   over the variable. [`ClientConfig::from_env_and_args`] removes the flags it used
//!   from the argument list, so the program's own parser never sees them; it stops looking
//!   at `--`.
//! - **Running** ([`spawn`]): one thread connects, registers, and answers `Top` (this
//!   process's figures from `/proc/self`), `Ping` and `Shutdown` (replies `{"Pid": n}`,
//!   then calls the program's shutdown hook). When the connection fails or closes it
//!   reconnects after a delay that doubles from 100 ms up to 30 s ([`Backoff`]), reset by
//!   a successful registration.
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

use super::frame::{Decoder, Frame, op};
use crate::procfs;

/// The server's address when none is configured: the original port, on loopback.
pub const DEFAULT_SERVER: &str = "127.0.0.1:7999";

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
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            id: 1,
            server: DEFAULT_SERVER.to_owned(),
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
        if let Some(value) = env("SIGNAL_CLIENT") {
            config.enabled = enables(&value);
        }
        if let Some(value) = env("SIGNAL_CLIENT_ID") {
            config.id = value
                .trim()
                .parse()
                .map_err(|_| ClientConfigError::BadId(value))?;
        }
        if let Some(value) = env("SIGNAL_SERVER_ADDRESS")
            && !value.trim().is_empty()
        {
            config.server = value.trim().to_owned();
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

/// Start the client thread for `config` (which should be enabled). `on_shutdown` runs
/// when the server asks this program to shut down.
pub fn spawn(config: ClientConfig, on_shutdown: ShutdownHook) -> io::Result<ClientHandle> {
    let stop = Arc::new(AtomicBool::new(false));
    let registered = Arc::new(AtomicBool::new(false));
    let (s, r) = (Arc::clone(&stop), Arc::clone(&registered));
    let thread = thread::Builder::new()
        .name("signal-client".to_owned())
        .spawn(move || run(&config, &*on_shutdown, &s, &r))?;
    Ok(ClientHandle {
        stop,
        registered,
        thread: Some(thread),
    })
}

/// Connect, serve, reconnect, until `stop`.
fn run(config: &ClientConfig, on_shutdown: &dyn Fn(), stop: &AtomicBool, registered: &AtomicBool) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
    while !stop.load(Ordering::Relaxed) {
        if let Ok(stream) = connect(&config.server) {
            let _ = serve(&stream, config, on_shutdown, stop, registered, &mut backoff);
            registered.store(false, Ordering::Relaxed);
            let _ = stream.shutdown(Shutdown::Both);
        }
        let until = Instant::now() + backoff.next_delay();
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
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

/// One connection: register, then answer requests until it ends.
fn serve(
    stream: &TcpStream,
    config: &ClientConfig,
    on_shutdown: &dyn Fn(),
    stop: &AtomicBool,
    registered: &AtomicBool,
    backoff: &mut Backoff,
) -> io::Result<()> {
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
    send(
        &mut writer,
        &Frame::request(op::REG, 1, json!({"Id": config.id, "Pid": pid})),
    )?;
    let registering_since = Instant::now();
    let mut decoder = Decoder::new();
    let mut buf = [0u8; 4096];
    let mut reader = stream;
    while !stop.load(Ordering::Relaxed) {
        if !registered.load(Ordering::Relaxed)
            && registering_since.elapsed() > Duration::from_secs(5)
        {
            return Err(ErrorKind::TimedOut.into());
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        decoder.push(buf.get(..n).unwrap_or_default());
        while let Some(frame) = decoder
            .next_frame()
            .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?
        {
            if frame.is_reply() {
                if frame.base_op() == op::REG {
                    registered.store(true, Ordering::Relaxed);
                    backoff.reset();
                }
                continue;
            }
            match frame.op {
                op::TOP => send(&mut writer, &frame.reply(own_figures()))?,
                op::PING => send(&mut writer, &frame.reply(Value::Null))?,
                op::SHUTDOWN => {
                    send(&mut writer, &frame.reply(json!({"Pid": pid})))?;
                    on_shutdown();
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
    use crate::signal::server::{SignalError, SignalServer};
    use std::sync::mpsc;

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
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn the_rust_client_registers_answers_and_shuts_down() {
        let server = SignalServer::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr();
        let handle = server.spawn().unwrap();
        let (tx, rx) = mpsc::channel();
        let client = spawn(
            ClientConfig {
                enabled: true,
                id: 42,
                server: addr.to_string(),
            },
            Box::new(move || {
                let _ = tx.send(());
            }),
        )
        .unwrap();
        wait_until("registration", || {
            handle.is_registered(42) && client.is_registered()
        });
        let timeout = Duration::from_secs(5);
        assert_eq!(
            handle.request(42, op::PING, Value::Null, timeout).unwrap(),
            Value::Null
        );
        // Many outstanding requests at once, from several threads.
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let h = handle.clone();
                thread::spawn(move || h.request(42, op::TOP, Value::Null, timeout).unwrap())
            })
            .collect();
        for t in threads {
            let top = t.join().unwrap();
            assert_eq!(top["Pid"], json!(std::process::id()));
            assert!(top["RssBytes"].as_u64().unwrap() > 0);
        }
        let reply = handle
            .request(42, op::SHUTDOWN, Value::Null, timeout)
            .unwrap();
        assert_eq!(reply, json!({"Pid": std::process::id()}));
        rx.recv_timeout(timeout).unwrap();
        assert!(matches!(
            handle.request(7, op::PING, Value::Null, timeout),
            Err(SignalError::NotRegistered(7))
        ));
        client.stop();
        wait_until("unregistration", || !handle.is_registered(42));
        handle.stop();
    }

    #[test]
    fn the_client_reconnects_when_the_server_comes_back() {
        // Find a free port, start the client first, then the server on that port.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = spawn(
            ClientConfig {
                enabled: true,
                id: 5,
                server: format!("127.0.0.1:{port}"),
            },
            Box::new(|| {}),
        )
        .unwrap();
        thread::sleep(Duration::from_millis(300));
        assert!(!client.is_registered());
        let handle = SignalServer::bind(("127.0.0.1", port))
            .unwrap()
            .spawn()
            .unwrap();
        wait_until("registration", || handle.is_registered(5));
        handle.stop();
        wait_until("the client to notice", || !client.is_registered());
        // The stopped server's accept thread lets go of the port within its poll interval.
        let rebind = || loop {
            match SignalServer::bind(("127.0.0.1", port)) {
                Ok(server) => return server.spawn().unwrap(),
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        };
        let handle = rebind();
        wait_until("registration again", || handle.is_registered(5));
        client.stop();
        handle.stop();
    }

    #[test]
    fn garbage_closes_only_that_connection() {
        let server = SignalServer::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr();
        let handle = server.spawn().unwrap();
        let client = spawn(
            ClientConfig {
                enabled: true,
                id: 1,
                server: addr.to_string(),
            },
            Box::new(|| {}),
        )
        .unwrap();
        wait_until("registration", || handle.is_registered(1));
        for garbage in [&[0xffu8, 0xff, 0xff, 0xff][..], &[0, 0, 0, 10, 9, 0, 0, 0]] {
            let mut bad = TcpStream::connect(addr).unwrap();
            bad.write_all(garbage).unwrap();
            bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut rest = Vec::new();
            // The server closes it: end of stream or a reset.
            let _ = bad.read_to_end(&mut rest);
            assert!(rest.is_empty());
        }
        assert_eq!(
            handle
                .request(1, op::PING, Value::Null, Duration::from_secs(5))
                .unwrap(),
            Value::Null
        );
        client.stop();
        handle.stop();
    }
}
