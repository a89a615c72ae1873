//! The mio event loop around [`NodeCore`]: the real UDP socket, the real TUN device, the
//! clock, and the control plane's commands.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Receiver;
use mio::net::UdpSocket;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::core::{NodeCore, NodeDrop, NodeIo, SetupError, buffer_len};
use super::handle::{Command, EngineHandle};
use super::setup::NodeSetup;
use crate::route::Prefix;
use crate::session::HEADROOM;
use crate::sys::netlink;
use crate::sys::tun::TunDevice;
use crate::sys::udp;

const UDP: Token = Token(0);
const TUN: Token = Token(1);
const WAKER: Token = Token(2);

/// Socket buffer size asked for on the transport socket (both directions).
pub const SOCKET_BUFFER: usize = 4 << 20;
/// Packets handled from one source before the loop turns to the other, for fairness.
const BUDGET: usize = 64;
/// Largest datagram read from the transport.
const MAX_DATAGRAM: usize = 65_535;

/// The engine could not start or stopped on an error.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The transport socket could not be bound.
    #[error("cannot bind the UDP transport to {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The TUN device could not be created or configured.
    #[error("cannot create TUN device {name}: {source}")]
    Tun {
        /// Its name.
        name: String,
        /// Why.
        source: io::Error,
    },
    /// A route for a prefix could not be added to the kernel's routing table.
    #[error("cannot route {prefix} through the TUN device: {source}")]
    Route {
        /// The prefix.
        prefix: Prefix,
        /// Why.
        source: io::Error,
    },
    /// The setup is inconsistent.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The event loop failed.
    #[error("event loop: {0}")]
    Poll(io::Error),
}

impl EngineError {
    /// The underlying I/O error, if any (to tell permission problems apart).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            EngineError::Bind { source, .. }
            | EngineError::Tun { source, .. }
            | EngineError::Route { source, .. }
            | EngineError::Poll(source) => Some(source),
            EngineError::Setup(_) => None,
        }
    }
}

/// A running engine: its handle, what it bound, and its thread.
#[derive(Debug)]
pub struct RunningEngine {
    /// Commands to the event loop.
    pub handle: EngineHandle,
    /// The bound transport address.
    pub listen: SocketAddr,
    /// The TUN device's name, if any.
    pub tun_name: Option<String>,
    thread: JoinHandle<Result<(), EngineError>>,
}

impl RunningEngine {
    /// Wait for the event loop to return (after [`EngineHandle::shutdown`] or an error).
    pub fn wait(self) -> Result<(), EngineError> {
        self.thread.join().unwrap_or_else(|_| {
            Err(EngineError::Poll(io::Error::other(
                "engine thread panicked",
            )))
        })
    }
}

/// Bind the transport, create the TUN device and its routes, and start the event loop on
/// its own thread. Nothing is left behind if a step fails: what was created is dropped.
pub fn start(setup: &NodeSetup) -> Result<RunningEngine, EngineError> {
    let socket =
        udp::bind_udp(setup.listen, SOCKET_BUFFER).map_err(|source| EngineError::Bind {
            addr: setup.listen,
            source,
        })?;
    let listen = socket.local_addr().map_err(|source| EngineError::Bind {
        addr: setup.listen,
        source,
    })?;
    let tun = match &setup.tun {
        None => None,
        Some(t) => Some(TunDevice::create(t).map_err(|source| EngineError::Tun {
            name: t.name.clone(),
            source,
        })?),
    };
    if let (Some(device), Some(tun_setup)) = (&tun, &setup.tun) {
        // Prefixes inside the device's own networks are routed by the kernel already.
        let if_index = device.if_index().map_err(|source| EngineError::Tun {
            name: tun_setup.name.clone(),
            source,
        })?;
        for prefix in setup.routes.iter().flat_map(|r| &r.prefixes) {
            let covered = tun_setup
                .addresses
                .iter()
                .any(|a| a.len() <= prefix.len() && a.contains(prefix.network()));
            if covered {
                continue;
            }
            // "Already exists" means another interface routes this prefix: traffic would not
            // reach the tunnel, so that is an error too.
            netlink::add_route(if_index, prefix).map_err(|source| EngineError::Route {
                prefix: *prefix,
                source,
            })?;
        }
    }
    let unix_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let core = NodeCore::new(setup, listen, Instant::now(), unix_time)?;
    let poll = Poll::new().map_err(EngineError::Poll)?;
    let waker = std::sync::Arc::new(Waker::new(poll.registry(), WAKER).map_err(EngineError::Poll)?);
    let (handle, commands) = EngineHandle::new(waker);
    let mtu = setup.tun.as_ref().map_or(1420, |t| usize::from(t.mtu));
    let tun_name = tun.as_ref().map(|t| t.name().to_owned());
    let thread = std::thread::Builder::new()
        .name("skywire-engine".into())
        .spawn(move || EventLoop::new(poll, socket, tun, core, commands, mtu)?.run())
        .map_err(EngineError::Poll)?;
    Ok(RunningEngine {
        handle,
        listen,
        tun_name,
        thread,
    })
}

/// The state of the event loop thread.
struct EventLoop {
    poll: Poll,
    socket: UdpSocket,
    tun: Option<TunDevice>,
    core: NodeCore,
    commands: Receiver<Command>,
    /// Receive buffer for datagrams (forwarded or opened in place).
    datagram: Vec<u8>,
    /// Buffer for TUN packets, with header room in front and tag room behind.
    packet: Vec<u8>,
}

/// [`NodeIo`] over the real socket and TUN device; failures become drop counts.
struct Io<'a> {
    socket: &'a UdpSocket,
    tun: Option<&'a TunDevice>,
    dropped: u64,
}

impl NodeIo for Io<'_> {
    fn send_udp(&mut self, to: SocketAddr, packet: &[u8]) {
        if self.socket.send_to(packet, to).is_err() {
            self.dropped += 1;
        }
    }

    fn write_tun(&mut self, packet: &[u8]) {
        match self.tun {
            Some(tun) if tun.send(packet).is_ok() => {}
            _ => self.dropped += 1,
        }
    }
}

impl EventLoop {
    fn new(
        poll: Poll,
        mut socket: UdpSocket,
        tun: Option<TunDevice>,
        core: NodeCore,
        commands: Receiver<Command>,
        mtu: usize,
    ) -> Result<Self, EngineError> {
        poll.registry()
            .register(&mut socket, UDP, Interest::READABLE)
            .map_err(EngineError::Poll)?;
        if let Some(tun) = &tun {
            poll.registry()
                .register(&mut SourceFd(&tun.as_raw_fd()), TUN, Interest::READABLE)
                .map_err(EngineError::Poll)?;
        }
        Ok(Self {
            poll,
            socket,
            tun,
            core,
            commands,
            datagram: vec![0u8; MAX_DATAGRAM],
            packet: vec![0u8; buffer_len(mtu)],
        })
    }

    fn run(mut self) -> Result<(), EngineError> {
        let mut events = Events::with_capacity(16);
        // Edge-triggered readiness: a source stays "ready" until a read says WouldBlock.
        let (mut udp_ready, mut tun_ready) = (true, self.tun.is_some());
        loop {
            let timeout = if udp_ready || tun_ready {
                Some(std::time::Duration::ZERO)
            } else {
                self.core
                    .next_deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()))
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(EngineError::Poll(e)),
            }
            for event in &events {
                match event.token() {
                    UDP => udp_ready = true,
                    TUN => tun_ready = true,
                    _ => {}
                }
            }
            if !self.serve_commands() {
                let mut io = Io {
                    socket: &self.socket,
                    tun: self.tun.as_ref(),
                    dropped: 0,
                };
                self.core.close_all(Instant::now(), &mut io);
                return Ok(());
            }
            if udp_ready {
                udp_ready = self.read_transport();
            }
            if tun_ready {
                tun_ready = self.read_tun();
            }
            let mut io = Io {
                socket: &self.socket,
                tun: self.tun.as_ref(),
                dropped: 0,
            };
            self.core.poll_timers(Instant::now(), &mut io);
            let dropped = io.dropped;
            self.count_dropped(dropped);
        }
    }

    /// Answer queued commands; false when asked to shut down.
    fn serve_commands(&mut self) -> bool {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Status(reply) => {
                    let _ = reply.send(self.core.status(Instant::now()));
                }
                Command::Shutdown => return false,
            }
        }
        true
    }

    fn count_dropped(&mut self, n: u64) {
        self.core.count_drops(NodeDrop::QueueFull, n);
    }

    /// Handle up to [`BUDGET`] datagrams; true if more may be waiting.
    fn read_transport(&mut self) -> bool {
        let mut io = Io {
            socket: &self.socket,
            tun: self.tun.as_ref(),
            dropped: 0,
        };
        let mut more = true;
        for _ in 0..BUDGET {
            match self.socket.recv_from(&mut self.datagram) {
                Ok((n, from)) => {
                    let now = Instant::now();
                    if let Some(buf) = self.datagram.get_mut(..n) {
                        self.core.handle_datagram(now, from, buf, &mut io);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    more = false;
                    break;
                }
                // ICMP errors surfacing on the socket, and the like: nothing to read now.
                Err(_) => {}
            }
        }
        let dropped = io.dropped;
        self.count_dropped(dropped);
        more
    }

    /// Handle up to [`BUDGET`] packets from the TUN device; true if more may be waiting.
    fn read_tun(&mut self) -> bool {
        let Some(tun) = self.tun.as_ref() else {
            return false;
        };
        let mut io = Io {
            socket: &self.socket,
            tun: Some(tun),
            dropped: 0,
        };
        let mut more = true;
        for _ in 0..BUDGET {
            let Some(room) = self.packet.get_mut(HEADROOM..) else {
                return false;
            };
            match tun.recv(room) {
                Ok(n) => self
                    .core
                    .handle_tun_packet(Instant::now(), &mut self.packet, n, &mut io),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    more = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A packet longer than the buffer (above the MTU) was cut: drop it, read on.
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    self.core.count_drop(NodeDrop::TooBig);
                }
                // The device failed; waiting for the next readiness event is all we can do.
                Err(_) => {
                    more = false;
                    break;
                }
            }
        }
        let dropped = io.dropped;
        self.count_dropped(dropped);
        more
    }
}
