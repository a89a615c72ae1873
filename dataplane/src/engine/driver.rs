//! The mio event loop around [`NodeCore`]: the real UDP socket, the real TUN device, the
//! clock, and the control plane's commands.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::net::UdpSocket;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::apps::Apps;
use super::core::{NodeCore, NodeDrop, NodeIo, SetupError, buffer_len};
use super::event::EngineEvent;
use super::handle::{Command, EngineHandle};
use super::heartbeat::Heartbeat;
use super::setup::{Fwmark, NodeSetup};
use crate::route::{ForwardDrop, Prefix};
use crate::session::HEADROOM;
use crate::stack::StreamError;
use crate::sys::batch::{self, RecvBatch, SendBatch};
use crate::sys::netlink;
use crate::sys::tun::{self, COALESCE_CAPACITY, TunDevice};
use crate::sys::{socket, udp};
use tun_rs::{GROTable, VIRTIO_NET_HDR_LEN};

const UDP: Token = Token(0);
const TUN: Token = Token(1);
const WAKER: Token = Token(2);

/// Socket buffer size asked for on the transport socket (both directions).
pub const SOCKET_BUFFER: usize = 4 << 20;

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
    #[error("cannot create TUN device {name}: {source}{}", needs_admin(.source))]
    Tun {
        /// Its name.
        name: String,
        /// Why.
        source: io::Error,
    },
    /// The transport socket could not be marked (`SO_MARK` needs `CAP_NET_ADMIN`).
    #[error(
        "cannot mark the transport socket with {fwmark} (setting a firewall mark needs root or CAP_NET_ADMIN; node.fwmark: off runs without one): {source}"
    )]
    Mark {
        /// The mark asked for.
        fwmark: Fwmark,
        /// Why.
        source: io::Error,
    },
    /// A route for a prefix could not be added to the kernel's routing table.
    #[error("cannot route {prefix} through the TUN device: {source}{}", needs_admin(.source))]
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

/// What to do about a refused privileged operation.
fn needs_admin(source: &io::Error) -> &'static str {
    if source.kind() == io::ErrorKind::PermissionDenied {
        " (a TUN device and its routes need root or CAP_NET_ADMIN: run the node as root, or \
         give the binary the capability with `setcap cap_net_admin+ep`)"
    } else {
        ""
    }
}

impl EngineError {
    /// The underlying I/O error, if any (to tell permission problems apart).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            EngineError::Bind { source, .. }
            | EngineError::Tun { source, .. }
            | EngineError::Route { source, .. }
            | EngineError::Mark { source, .. }
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
    if let Some(fwmark) = setup.fwmark {
        socket::set_mark(socket.as_fd(), fwmark.mark)
            .map_err(|source| EngineError::Mark { fwmark, source })?;
    }
    let tun = match &setup.tun {
        None => None,
        Some(t) => {
            Some(
                TunDevice::create(t, setup.offload).map_err(|source| EngineError::Tun {
                    name: t.name.clone(),
                    source,
                })?,
            )
        }
    };
    let mut kernel_routes = KernelRoutes::default();
    if let (Some(device), Some(tun_setup)) = (&tun, &setup.tun) {
        let if_index = device.if_index().map_err(|source| EngineError::Tun {
            name: tun_setup.name.clone(),
            source,
        })?;
        kernel_routes = KernelRoutes {
            if_index: Some(if_index),
            addresses: tun_setup.addresses.clone(),
            routed: Vec::new(),
        };
        for prefix in setup.routes.iter().flat_map(|r| &r.prefixes) {
            if !kernel_routes.needs(prefix) {
                continue;
            }
            // "Already exists" means another interface routes this prefix: traffic would not
            // reach the tunnel, so that is an error too.
            netlink::add_route(if_index, prefix).map_err(|source| EngineError::Route {
                prefix: *prefix,
                source,
            })?;
            kernel_routes.routed.push(*prefix);
        }
    }
    let unix_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let core = NodeCore::new(setup, listen, Instant::now(), unix_time)?;
    let poll = Poll::new().map_err(EngineError::Poll)?;
    let waker = std::sync::Arc::new(Waker::new(poll.registry(), WAKER).map_err(EngineError::Poll)?);
    let (handle, commands, events) = EngineHandle::new(waker);
    let mtu = setup.tun.as_ref().map_or(1420, |t| usize::from(t.mtu));
    let tun_name = tun.as_ref().map(|t| t.name().to_owned());
    let offload = setup.offload;
    let control = Control {
        commands,
        events,
        kernel_routes,
    };
    let thread = std::thread::Builder::new()
        .name("skywire-engine".into())
        .spawn(move || EventLoop::new(poll, socket, tun, core, control, mtu, offload)?.run())
        .map_err(EngineError::Poll)?;
    Ok(RunningEngine {
        handle,
        listen,
        tun_name,
        thread,
    })
}

/// `recvmmsg` calls per turn at most before the loop turns to the TUN device: each reads
/// up to 16 messages (up to ~45 datagrams each with GRO).
const BUDGET: usize = 8;
/// Datagrams per turn from the transport: reading stops after this many so the other
/// direction (and its latency: a ping's reply waits in the TUN queue meanwhile) is served
/// within about 0.5 ms even when this one is saturated.
const UDP_DATAGRAMS: usize = 256;
/// TUN reads per turn at most (each one packet, or one super-packet of up to ~45).
const TUN_READS: usize = 64;
/// Packets per turn from the TUN device: reading stops after this many, so small packets
/// are sent 128 to a `sendmmsg` and large ones a few super-packets at a time.
const TUN_PACKETS: usize = 128;

/// Kernel routes that send prefixes of route ends into the TUN device.
#[derive(Default)]
struct KernelRoutes {
    /// The TUN device; `None` for a node without one.
    if_index: Option<u32>,
    /// The device's own networks, routed by the kernel already.
    addresses: Vec<Prefix>,
    /// Prefixes this engine routed through the device.
    routed: Vec<Prefix>,
}

impl KernelRoutes {
    /// Does `prefix` need a route through the device?
    fn needs(&self, prefix: &Prefix) -> bool {
        let covered = self
            .addresses
            .iter()
            .any(|a| a.len() <= prefix.len() && a.contains(prefix.network()));
        !covered && !self.routed.contains(prefix)
    }

    /// Make the kernel's routes through the device match the prefixes the live route ends
    /// claim: route new ones (best effort: one the kernel refuses, say because another
    /// interface routes that prefix, is left out), and remove those no end claims any more
    /// (an end removed by the manager or expired), so no route outlives its end. Called
    /// after every batch of rule changes and every expiry.
    fn sync<'a>(&mut self, claimed: impl Iterator<Item = &'a Prefix>) {
        let Some(if_index) = self.if_index else {
            return;
        };
        let claimed: Vec<Prefix> = claimed.copied().collect();
        self.routed.retain(|prefix| {
            if claimed.contains(prefix) {
                return true;
            }
            // Gone already (someone deleted it by hand) is as good as deleted.
            match netlink::delete_route(if_index, prefix) {
                Ok(()) => false,
                Err(e) => e.kind() != std::io::ErrorKind::NotFound,
            }
        });
        for prefix in &claimed {
            if self.needs(prefix) && netlink::add_route(if_index, prefix).is_ok() {
                self.routed.push(*prefix);
            }
        }
    }
}

/// The event loop's side of the control plane.
struct Control {
    commands: Receiver<Command>,
    events: Sender<EngineEvent>,
    kernel_routes: KernelRoutes,
}

/// The state of the event loop thread.
struct EventLoop {
    poll: Poll,
    socket: UdpSocket,
    tun: Option<TunDevice>,
    core: NodeCore,
    control: Control,
    /// Datagrams read by `recvmmsg` (forwarded or opened in place).
    recv: RecvBatch,
    /// Datagrams to send, grouped for GSO.
    send: SendBatch,
    /// Packets read from the TUN device, each at `HEADROOM` (sealed in place).
    tun_in: TunIn,
    /// Packets for the TUN device, coalesced on flush.
    tun_out: TunOut,
    /// Apps' stream connections, dials and listeners.
    apps: Apps,
    /// The source address per neighbour, on a socket bound to the wildcard address.
    sticky: Sticky,
    /// Polled after every turn (the node's watchdog), once the control plane gave one.
    heartbeat: Option<Heartbeat>,
}

/// Where the node sends each neighbour's datagrams from, on a socket bound to the wildcard
/// address of a host with several (WireGuard's sticky sockets): the local address that the
/// neighbour's last authentic datagram was sent to, so that the neighbour sees the node at
/// the address it reaches it by, whatever the host's routes would pick. Learned only from
/// what the core found authentic (link probes, opened route packets); empty, and never
/// consulted, on a socket bound to one address.
#[derive(Debug, Default)]
struct Sticky {
    /// On for a wildcard-bound socket with `IP_PKTINFO`.
    enabled: bool,
    sources: std::collections::HashMap<SocketAddr, IpAddr>,
    /// The last lookup or lesson, so that the common case (one peer's packets in a row)
    /// costs a comparison, not a hash, per packet.
    last: Option<(SocketAddr, Option<IpAddr>)>,
}

/// Neighbours remembered by [`Sticky`]; past this the table starts again (a node has far
/// fewer neighbours, and entries are made only from authentic datagrams).
const STICKY_ENTRIES: usize = 4096;

impl Sticky {
    fn learn(&mut self, from: SocketAddr, local: Option<IpAddr>) {
        let Some(local) = local.filter(|_| self.enabled) else {
            return;
        };
        if self.last == Some((from, Some(local))) {
            return;
        }
        if self.sources.get(&from) != Some(&local) {
            if self.sources.len() >= STICKY_ENTRIES {
                self.sources.clear();
            }
            self.sources.insert(from, local);
        }
        self.last = Some((from, Some(local)));
    }

    fn source(&mut self, to: SocketAddr) -> Option<IpAddr> {
        if self.sources.is_empty() {
            return None;
        }
        if let Some((last, source)) = self.last
            && last == to
        {
            return source;
        }
        let source = self.sources.get(&to).copied();
        self.last = Some((to, source));
        source
    }
}

/// Buffers for reading the TUN device: the raw read and the packets cut from it.
struct TunIn {
    scratch: Vec<u8>,
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
}

/// Packets queued for the TUN device, each at `bufs[i][TUN_OUT_OFFSET..]`.
struct TunOut {
    bufs: Vec<Vec<u8>>,
    used: usize,
    gro: GROTable,
}

/// Where packets for the TUN device start in their buffers: room for the virtio-net header.
const TUN_OUT_OFFSET: usize = VIRTIO_NET_HDR_LEN;
/// Packets queued for the TUN device before a flush.
const TUN_OUT_SLOTS: usize = 128;

impl TunOut {
    fn new() -> Self {
        Self {
            bufs: (0..TUN_OUT_SLOTS)
                .map(|_| Vec::with_capacity(COALESCE_CAPACITY))
                .collect(),
            used: 0,
            gro: GROTable::default(),
        }
    }

    /// Queue a copy of `packet`; false when full (flush first).
    fn push(&mut self, packet: &[u8]) -> bool {
        let Some(buf) = self.bufs.get_mut(self.used) else {
            return false;
        };
        buf.clear();
        buf.resize(TUN_OUT_OFFSET, 0);
        buf.extend_from_slice(packet);
        self.used += 1;
        true
    }

    /// Write what is queued; the number of write failures (0 or 1: a batch reports one).
    fn flush(&mut self, tun: Option<&TunDevice>) -> u64 {
        if self.used == 0 {
            return 0;
        }
        let used = std::mem::take(&mut self.used);
        let (Some(tun), Some(bufs)) = (tun, self.bufs.get_mut(..used)) else {
            return used as u64;
        };
        match tun.send_batch(&mut self.gro, bufs, TUN_OUT_OFFSET) {
            Ok(_) => 0,
            Err(_) => 1,
        }
    }
}

/// What an [`Io`] dropped: (for full queues and the like, for want of a way, the last
/// unreachable destination and its OS error).
type Drops = (u64, u64, Option<(SocketAddr, i32)>);

/// [`NodeIo`] over the batches: packets are copied into them and leave on flush.
struct Io<'a> {
    socket: &'a UdpSocket,
    send: &'a mut SendBatch,
    tun: Option<&'a TunDevice>,
    tun_out: &'a mut TunOut,
    sticky: &'a mut Sticky,
    /// The datagram being handled: who sent it and the local address it reached.
    current: Option<(SocketAddr, Option<IpAddr>)>,
    dropped: u64,
    /// Of `dropped`, datagrams the kernel had no way to send.
    unreachable: u64,
    /// The last of those: its destination and OS error.
    unreachable_to: Option<(SocketAddr, i32)>,
}

impl<'a> Io<'a> {
    /// The output side over the loop's parts (borrowed apart from the rest of the loop).
    fn over(
        socket: &'a UdpSocket,
        send: &'a mut SendBatch,
        tun: Option<&'a TunDevice>,
        tun_out: &'a mut TunOut,
        sticky: &'a mut Sticky,
    ) -> Self {
        Self {
            socket,
            send,
            tun,
            tun_out,
            sticky,
            current: None,
            dropped: 0,
            unreachable: 0,
            unreachable_to: None,
        }
    }

    /// Send and write everything queued, datagrams first.
    fn flush(&mut self) {
        let flushed = self.send.flush(self.socket.as_fd());
        self.count(flushed);
        self.dropped += self.tun_out.flush(self.tun);
    }

    fn count(&mut self, flushed: batch::Flushed) {
        self.dropped += flushed.dropped;
        self.unreachable += flushed.unreachable;
        if flushed.unreachable_to.is_some() {
            self.unreachable_to = flushed.unreachable_to;
        }
    }

    /// (dropped for other reasons, unreachable, the last unreachable destination and its
    /// OS error).
    fn drops(&self) -> Drops {
        (
            self.dropped - self.unreachable,
            self.unreachable,
            self.unreachable_to,
        )
    }
}

impl NodeIo for Io<'_> {
    fn send_udp(&mut self, to: SocketAddr, packet: &[u8]) {
        let from = self.sticky.source(to);
        if self.send.push_from(to, from, packet) {
            return;
        }
        let flushed = self.send.flush(self.socket.as_fd());
        self.count(flushed);
        if !self.send.push_from(to, from, packet) {
            self.dropped += 1;
        }
    }

    fn authentic(&mut self, from: SocketAddr) {
        if let Some((sender, local)) = self.current
            && sender == from
        {
            self.sticky.learn(from, local);
        }
    }

    fn write_tun(&mut self, packet: &[u8]) {
        if self.tun.is_none() {
            self.dropped += 1;
            return;
        }
        if self.tun_out.push(packet) {
            return;
        }
        self.dropped += self.tun_out.flush(self.tun);
        if !self.tun_out.push(packet) {
            self.dropped += 1;
        }
    }
}

impl EventLoop {
    fn new(
        poll: Poll,
        mut socket: UdpSocket,
        tun: Option<TunDevice>,
        core: NodeCore,
        control: Control,
        mtu: usize,
        offload: bool,
    ) -> Result<Self, EngineError> {
        poll.registry()
            .register(&mut socket, UDP, Interest::READABLE)
            .map_err(EngineError::Poll)?;
        if let Some(tun) = &tun {
            poll.registry()
                .register(&mut SourceFd(&tun.as_raw_fd()), TUN, Interest::READABLE)
                .map_err(EngineError::Poll)?;
        }
        if offload {
            // Refused by kernels before 5.0: datagrams then come one per slot.
            batch::enable_gro(socket.as_fd());
        }
        let local = socket.local_addr().map_err(EngineError::Poll)?;
        // A wildcard socket on a host with several addresses answers each neighbour from
        // the address it reaches (see `Sticky`).
        let sticky = Sticky {
            enabled: local.ip().is_unspecified()
                && batch::enable_pktinfo(socket.as_fd(), local.is_ipv6()).is_ok(),
            ..Sticky::default()
        };
        let slots = if tun.as_ref().is_some_and(TunDevice::offload) {
            tun::batch_slots(mtu)
        } else {
            1
        };
        Ok(Self {
            poll,
            send: SendBatch::new(local, offload),
            socket,
            tun,
            core,
            control,
            recv: RecvBatch::new(),
            tun_in: TunIn {
                scratch: vec![0u8; tun::SCRATCH_LEN],
                bufs: (0..slots).map(|_| vec![0u8; buffer_len(mtu)]).collect(),
                sizes: vec![0; slots],
            },
            tun_out: TunOut::new(),
            apps: Apps::default(),
            sticky,
            heartbeat: None,
        })
    }

    /// Borrow the output side as a [`NodeIo`].
    fn io(&mut self) -> (&mut NodeCore, Io<'_>) {
        (
            &mut self.core,
            Io::over(
                &self.socket,
                &mut self.send,
                self.tun.as_ref(),
                &mut self.tun_out,
                &mut self.sticky,
            ),
        )
    }

    fn run(mut self) -> Result<(), EngineError> {
        let mut events = Events::with_capacity(256);
        // Edge-triggered readiness: a source stays "ready" until a read says WouldBlock.
        let (mut udp_ready, mut tun_ready) = (true, self.tun.is_some());
        loop {
            let timeout = if udp_ready || tun_ready {
                Some(std::time::Duration::ZERO)
            } else {
                let now = Instant::now();
                let timers = self
                    .core
                    .next_deadline()
                    .map(|d| d.saturating_duration_since(now));
                // Never sleep past the next heartbeat: an idle loop still beats.
                let beat = self.heartbeat.as_ref().map(|h| h.wait(now));
                match (timers, beat) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
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
                    WAKER => {}
                    other => self.apps.wake(self.poll.registry(), other),
                }
            }
            if !self.serve_commands() {
                self.refuse_commands();
                self.apps.close_all(self.poll.registry());
                let (core, mut io) = self.io();
                core.close_all(Instant::now(), &mut io);
                io.flush();
                return Ok(());
            }
            if udp_ready {
                udp_ready = self.read_transport();
            }
            if tun_ready {
                tun_ready = self.read_tun();
            }
            let (core, mut io) = self.io();
            core.poll_timers(Instant::now(), &mut io);
            io.flush();
            let dropped = io.drops();
            self.count_dropped(dropped);
            self.serve_apps();
            self.deliver_events();
            if let Some(heartbeat) = &mut self.heartbeat {
                heartbeat.poll(Instant::now());
            }
        }
    }

    /// Move bytes between apps' connections and their streams, and pass the stack's news
    /// to dials and listeners.
    fn serve_apps(&mut self) {
        let EventLoop {
            socket,
            send,
            tun,
            tun_out,
            core,
            apps,
            poll,
            sticky,
            ..
        } = self;
        let mut io = Io::over(socket, send, tun.as_ref(), tun_out, sticky);
        apps.serve(poll.registry(), core, Instant::now(), &mut io);
        io.flush();
        let dropped = io.drops();
        self.count_dropped(dropped);
    }

    /// On shutdown: drop the commands queued behind it and disconnect the channel, so that
    /// whoever waits for an answer (the uplink applying a manager's rules, a `status`)
    /// learns at once that the engine stopped, as its reply channel closes, instead of
    /// waiting out its timeout; later sends fail at once. Dropping the receiver alone would
    /// not do: a bounded channel keeps its queued messages, and their reply senders, for
    /// as long as any handle lives. A command sent between the drain and the drop (a few
    /// instructions) is the one left to its timeout.
    fn refuse_commands(&mut self) {
        let commands = std::mem::replace(&mut self.control.commands, crossbeam_channel::never());
        for command in commands.try_iter() {
            drop(command);
        }
    }

    /// Answer queued commands; false when asked to shut down.
    fn serve_commands(&mut self) -> bool {
        while let Ok(command) = self.control.commands.try_recv() {
            match command {
                Command::Status(reply) => {
                    let _ = reply.send(self.core.status(Instant::now()));
                }
                Command::Grant(peer, prefixes, reply) => {
                    let _ = reply.send(self.core.grant(peer, prefixes));
                }
                Command::TakeUsage(reply) => {
                    let _ = reply.send(self.core.take_usage());
                }
                Command::AcceptedInitiations(reply) => {
                    let _ = reply.send(self.core.accepted_initiations());
                }
                Command::Apply(changes, reply) => {
                    let result = self.core.apply(Instant::now(), changes);
                    if result.is_ok() {
                        self.control
                            .kernel_routes
                            .sync(self.core.claimed_prefixes());
                    }
                    let _ = reply.send(result);
                }
                Command::Probe(to, nonce) => {
                    let (core, mut io) = self.io();
                    core.probe(Instant::now(), to, nonce, &mut io);
                    io.flush();
                    let dropped = io.drops();
                    self.count_dropped(dropped);
                }
                Command::Neighbours(neighbours) => {
                    self.core.set_neighbours(&neighbours);
                }
                Command::Ping(in_id, nonce, reply) => {
                    let (core, mut io) = self.io();
                    let result = core.ping(Instant::now(), in_id, nonce, &mut io);
                    io.flush();
                    let dropped = io.drops();
                    self.count_dropped(dropped);
                    let _ = reply.send(result);
                }
                Command::Dial {
                    peer,
                    port,
                    owner,
                    timeout,
                    reply,
                } => {
                    let (core, mut io) = self.io();
                    let result = core.dial(Instant::now(), peer, port, owner, timeout, &mut io);
                    io.flush();
                    match result {
                        Ok(id) => self.apps.wait_dial(id, reply),
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Command::Listen { options, reply } => {
                    let (tx, rx) = crossbeam_channel::bounded(options.backlog.max(1));
                    let id = self.apps.new_listener(tx);
                    match self.core.stack().listen(id, options) {
                        Ok(()) => {
                            let _ = reply.send(Ok((id, rx)));
                        }
                        Err(e) => {
                            self.apps.forget_listener(id);
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Command::Unlisten(id) => {
                    self.apps.forget_listener(id);
                    let (core, mut io) = self.io();
                    core.stack().unlisten(Instant::now(), id);
                    core.flush_stack(Instant::now(), &mut io);
                    io.flush();
                }
                Command::Attach {
                    stream,
                    owner,
                    socket,
                    greeting,
                    reply,
                } => {
                    let result = self
                        .core
                        .stack()
                        .attach(Instant::now(), stream, owner)
                        .and_then(|info| {
                            // The stream keeps its owner (a root app may attach another
                            // user's stream; the hand-over checks against the owner).
                            let owner = self.core.stack().owner(info.id).unwrap_or(owner);
                            self.apps
                                .add(self.poll.registry(), stream, owner, socket, &greeting)
                                .map_err(|_| StreamError::AppGone)
                        });
                    if result.is_err() {
                        self.core
                            .stack()
                            .abort(Instant::now(), stream, StreamError::AppGone);
                    }
                    let _ = reply.send(result);
                }
                Command::HandOver {
                    stream,
                    owner,
                    socket,
                    watch,
                    reply,
                } => {
                    let _ = reply.send(self.apps.hand_over(stream, owner, socket, watch));
                }
                Command::Watch {
                    owner,
                    socket,
                    reply,
                } => {
                    let watch = self
                        .apps
                        .watch(self.poll.registry(), owner, socket)
                        .map_err(|_| StreamError::AppGone);
                    let _ = reply.send(watch);
                }
                Command::Abort(stream) => {
                    let (core, mut io) = self.io();
                    core.stack()
                        .abort(Instant::now(), stream, StreamError::AppGone);
                    core.flush_stack(Instant::now(), &mut io);
                    io.flush();
                }
                Command::Heartbeat(heartbeat) => self.heartbeat = Some(heartbeat),
                // A test hook (`EngineHandle::stall`): the loop hangs on purpose.
                Command::Stall(duration) => std::thread::sleep(duration),
                Command::Shutdown => return false,
            }
        }
        true
    }

    /// Hand the core's events to the control plane; count those that do not fit. An
    /// expired route end takes its kernel routes with it.
    fn deliver_events(&mut self) {
        let mut dropped = 0;
        let mut expired = false;
        for event in self.core.drain_events() {
            expired |= matches!(event, EngineEvent::Expired { .. });
            match self.control.events.try_send(event) {
                Ok(()) => {}
                // Nobody reads them (or not fast enough): the count tells.
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => dropped += 1,
            }
        }
        if dropped > 0 {
            self.core.count_events_dropped(dropped);
        }
        if expired {
            self.control
                .kernel_routes
                .sync(self.core.claimed_prefixes());
        }
    }

    /// Count what an [`Io`] dropped: (full queues and the like, unreachable); an
    /// unreachable next hop goes to the core, which reports it at most once a minute.
    fn count_dropped(&mut self, (n, unreachable, unreachable_to): Drops) {
        if n > 0 {
            self.core.count_drops(NodeDrop::QueueFull, n);
        }
        if unreachable > 0 {
            self.core.count_drops(NodeDrop::Unreachable, unreachable);
        }
        if let Some((to, os_error)) = unreachable_to {
            self.core.unreachable(Instant::now(), to, os_error);
        }
    }

    /// Handle up to [`UDP_DATAGRAMS`] datagrams (at most [`BUDGET`] batches), then send and
    /// write what they produced; true if more may be waiting.
    fn read_transport(&mut self) -> bool {
        let EventLoop {
            socket,
            send,
            tun,
            tun_out,
            core,
            recv,
            sticky,
            ..
        } = self;
        let mut io = Io::over(socket, send, tun.as_ref(), tun_out, sticky);
        let mut more = true;
        let mut truncated = 0;
        let mut datagrams = 0;
        for _ in 0..BUDGET {
            if datagrams >= UDP_DATAGRAMS {
                break;
            }
            match recv.recv(io.socket.as_fd()) {
                Ok(n) => {
                    let now = Instant::now();
                    for i in 0..n {
                        let Some((received, slot)) = recv.message(i) else {
                            continue;
                        };
                        let Some(from) = received.from.filter(|_| !received.truncated) else {
                            truncated += 1;
                            continue;
                        };
                        io.current = Some((from, received.local));
                        for datagram in received.segments(slot) {
                            datagrams += 1;
                            core.handle_datagram(now, from, datagram, &mut io);
                        }
                        io.current = None;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    more = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ICMP errors surfacing on the socket, and the like: nothing to read now.
                Err(_) => {}
            }
        }
        io.flush();
        let dropped = io.drops();
        if truncated > 0 {
            core.count_forward_drops(ForwardDrop::Malformed, truncated);
        }
        self.count_dropped(dropped);
        more
    }

    /// Handle up to [`TUN_PACKETS`] packets (at most [`TUN_READS`] reads) from the TUN
    /// device, then send what they produced; true if more may be waiting.
    fn read_tun(&mut self) -> bool {
        let EventLoop {
            socket,
            send,
            tun,
            tun_out,
            core,
            tun_in,
            sticky,
            ..
        } = self;
        let Some(device) = tun.as_ref() else {
            return false;
        };
        let mut io = Io::over(socket, send, Some(device), tun_out, sticky);
        let mut more = true;
        let mut packets = 0;
        for _ in 0..TUN_READS {
            if packets >= TUN_PACKETS {
                break;
            }
            let read = device.recv_batch(
                &mut tun_in.scratch,
                &mut tun_in.bufs,
                &mut tun_in.sizes,
                HEADROOM,
            );
            match read {
                Ok(n) => {
                    packets += n;
                    let now = Instant::now();
                    for (buf, &len) in tun_in.bufs.iter_mut().zip(&tun_in.sizes).take(n) {
                        core.handle_tun_packet(now, buf, len, &mut io);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    more = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A packet longer than the buffer (above the MTU), or a super-packet that
                // cannot be cut: drop it, read on.
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    core.count_drop(NodeDrop::TooBig);
                }
                // The device failed; waiting for the next readiness event is all we can do.
                Err(_) => {
                    more = false;
                    break;
                }
            }
        }
        io.flush();
        let dropped = io.drops();
        self.count_dropped(dropped);
        more
    }
}
