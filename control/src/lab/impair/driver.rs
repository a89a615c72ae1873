//! The relay's loop: a socket on the listening address for the client, one towards the
//! target, poll(2) on both, and the [`Impairer`] between them. Thin on purpose: every
//! decision is the core's.
//!
//! The client is whoever sent last to the listening address; replies from the target go
//! back to it. Datagrams reaching the target socket from any other address are ignored
//! (and not counted). A failed send is skipped and counted (`send_failed`): one datagram never ends the loop.
//!
//! Commands ([`RelayCommand`], one a line on the relay's stdin in `skywire lab impair`)
//! change a direction's settings or ask for the counters while it runs; the loop checks
//! them at least every [`TICK`].

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use thiserror::Error;

use super::{Dir, Impairer, Impairments, Report, SettingsError};

/// The longest the loop sleeps before it looks at its commands and flags again.
pub const TICK: Duration = Duration::from_millis(10);

/// Where the relay listens and forwards to, and how it starts.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Where clients send to.
    pub listen: SocketAddr,
    /// Where their datagrams go.
    pub target: SocketAddr,
    /// The local address datagrams to the target leave from (the target's nodes name it as
    /// the previous hop); any port of the unspecified address if not given.
    pub bind: Option<SocketAddr>,
    /// The seed of every decision.
    pub seed: u64,
    /// Client to target, at the start.
    pub forward: Impairments,
    /// Target to client, at the start.
    pub back: Impairments,
    /// A file for one JSON line per datagram (its [`super::Decision`]).
    pub log: Option<PathBuf>,
}

/// A command to the running relay.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayCommand {
    /// `forward SETTINGS` or `back SETTINGS`: new settings for one direction.
    Set(Dir, Impairments),
    /// `report`: print the counters now.
    Report,
}

/// A command line the relay did not understand.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommandError {
    /// Neither `forward`, `back` nor `report`.
    #[error("unknown command (forward SETTINGS, back SETTINGS, report)")]
    Unknown,
    /// Bad settings after `forward` or `back`.
    #[error("{0}")]
    Settings(#[from] SettingsError),
}

impl FromStr for RelayCommand {
    type Err = CommandError;

    fn from_str(line: &str) -> Result<Self, CommandError> {
        let line = line.trim();
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "forward" => Ok(Self::Set(Dir::Forward, rest.parse()?)),
            "back" => Ok(Self::Set(Dir::Back, rest.parse()?)),
            "report" if rest.trim().is_empty() => Ok(Self::Report),
            _ => Err(CommandError::Unknown),
        }
    }
}

/// Why the relay could not run.
#[derive(Debug, Error)]
pub enum RelayError {
    /// A socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the system said.
        source: io::Error,
    },
    /// The log file could not be created or written.
    #[error("the log file {path}: {source}")]
    Log {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// A socket or poll(2) failed as a whole.
    #[error("{0}")]
    Io(#[from] io::Error),
}

fn bind(addr: SocketAddr) -> Result<UdpSocket, RelayError> {
    let socket = UdpSocket::bind(addr).map_err(|source| RelayError::Bind { addr, source })?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// The relay's sockets, bound; [`Relay::run`] moves datagrams.
#[derive(Debug)]
pub struct Relay {
    options: RelayOptions,
    client_socket: UdpSocket,
    target_socket: UdpSocket,
}

impl Relay {
    /// Bind both sockets.
    pub fn bind(options: RelayOptions) -> Result<Self, RelayError> {
        let client_socket = bind(options.listen)?;
        let any: SocketAddr = if options.target.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let target_socket = bind(options.bind.unwrap_or(any))?;
        Ok(Self {
            options,
            client_socket,
            target_socket,
        })
    }

    /// The listening address as bound (its port if 0 was asked).
    pub fn listen_addr(&self) -> io::Result<SocketAddr> {
        self.client_socket.local_addr()
    }

    /// Relay until `stop` is set: apply `commands` as they come (a report goes to
    /// `reports`, one JSON line), print one when `report_now` is set (and clear it), and
    /// return the final counters.
    pub fn run(
        self,
        commands: &Receiver<RelayCommand>,
        stop: &AtomicBool,
        report_now: &AtomicBool,
        reports: &mut dyn Write,
    ) -> Result<Report, RelayError> {
        let mut log = match &self.options.log {
            Some(path) => Some(BufWriter::new(File::create(path).map_err(|source| {
                RelayError::Log {
                    path: path.clone(),
                    source,
                }
            })?)),
            None => None,
        };
        let mut core = Impairer::new(self.options.seed);
        let now = Instant::now();
        core.set(now, Dir::Forward, self.options.forward);
        core.set(now, Dir::Back, self.options.back);
        let mut client: Option<SocketAddr> = None;
        let mut buf = vec![0u8; 65_536];
        let mut commands_open = true;
        while !stop.load(Ordering::Relaxed) {
            while commands_open {
                match commands.try_recv() {
                    Ok(RelayCommand::Set(dir, settings)) => core.set(Instant::now(), dir, settings),
                    Ok(RelayCommand::Report) => report_now.store(true, Ordering::Relaxed),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => commands_open = false,
                }
            }
            if report_now.swap(false, Ordering::Relaxed) {
                if let Some(log) = &mut log {
                    let _ = log.flush();
                }
                write_report(reports, &core.report())?;
            }
            let wait = core
                .poll_timeout()
                .map_or(TICK, |t| t.saturating_duration_since(Instant::now()))
                .min(TICK);
            let timeout = Timespec {
                tv_sec: 0,
                tv_nsec: i64::from(wait.subsec_nanos()),
            };
            let mut fds = [
                PollFd::new(&self.client_socket, PollFlags::IN),
                PollFd::new(&self.target_socket, PollFlags::IN),
            ];
            match poll(&mut fds, Some(&timeout)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(io::Error::from(e).into()),
            }
            let mut handle = |core: &mut Impairer, dir, bytes: &[u8]| {
                let decision = core.handle_datagram(Instant::now(), dir, bytes);
                if let Some(log) = &mut log
                    && let Ok(line) = serde_json::to_string(&decision)
                {
                    let _ = writeln!(log, "{line}");
                }
            };
            // Drain both sockets, a bounded batch each, so one side cannot starve the other.
            for _ in 0..64 {
                match self.client_socket.recv_from(&mut buf) {
                    Ok((len, from)) => {
                        client = Some(from);
                        handle(&mut core, Dir::Forward, buf.get(..len).unwrap_or_default());
                    }
                    Err(_) => break,
                }
            }
            for _ in 0..64 {
                match self.target_socket.recv_from(&mut buf) {
                    Ok((len, from)) if from == self.options.target => {
                        handle(&mut core, Dir::Back, buf.get(..len).unwrap_or_default());
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            while let Some(transmit) = core.poll_transmit(Instant::now()) {
                let sent = match transmit.dir {
                    Dir::Forward => self
                        .target_socket
                        .send_to(&transmit.bytes, self.options.target),
                    Dir::Back => match client {
                        Some(client) => self.client_socket.send_to(&transmit.bytes, client),
                        None => Ok(0),
                    },
                };
                if sent.is_err() {
                    core.count_send_failure(transmit.dir);
                }
            }
        }
        if let Some(log) = &mut log {
            log.flush().map_err(|source| RelayError::Log {
                path: self.options.log.clone().unwrap_or_default(),
                source,
            })?;
        }
        Ok(core.report())
    }
}

/// `report` as one JSON line.
pub fn write_report(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    let line = serde_json::to_string(report).map_err(io::Error::other)?;
    writeln!(out, "{line}")?;
    out.flush()
}
