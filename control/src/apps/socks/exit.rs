//! `skywire socks exit`: dials destinations for the SOCKS clients of allowed nodes.
//!
//! It listens on its port (1080 by default) on its node, through the app socket, for
//! streams from the keys in `clients` only (the node refuses the others before any byte:
//! they get no stream), or from every node when `public`. Per stream, on a thread of its
//! own while it dials:
//!
//! 1. **Limits** by the stream's key, the route's authenticated peer: connections at once
//!    in all and per key, new connections per second per key (a token bucket, bursts of
//!    twice the rate). A stream over a limit is answered 1 (general failure).
//! 2. **The request** (the client's SOCKS request, forwarded unchanged by the client app),
//!    within the negotiation timeout. BIND: 7; UDP ASSOCIATE: a relay ([`super::udp`]).
//! 3. **The destination.** A name is resolved here, at the exit (socks5h), never by the
//!    client: first [`policy::numeric_host`] (`127.1`, `2130706433`, `0x7f000001` are
//!    addresses and never reach the resolver), then [`policy::check_name`] (`localhost`),
//!    then the system resolver, bounded by the dial timeout. Every address goes through
//!    [`Policy::check`] (loopback, private, link-local, CGNAT, multicast, unique-local, the
//!    mesh's ranges, this host's addresses and their subnets, port 25; exceptions from
//!    `allow`), and only the addresses that passed are dialed: the connection goes to
//!    exactly an address that was checked, with no second lookup. Both families are tried,
//!    in the resolver's order, within the dial timeout. All refused: 2; no address: 4.
//! 4. **Dial**: connected, the reply is 0 with BND.ADDR `0.0.0.0:0` (the exit never tells
//!    its own addresses), and the connection to the destination is handed over to the node
//!    (`AppStream::hand_over`), which moves the bytes from then on; a failed connect is
//!    answered with its code (refused 5, timed out 6, unreachable 3 or 4).
//!
//! Every refusal is logged with the client's key, the destination and the reason.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::route::Prefix;

use super::policy::{self, Policy, Refusal};
use super::tally::{Limits, Tally, Watcher};
use super::wire::{self, Command, Dest, Rep};
use crate::node::apps::client::{AppListener, ListenRequest};
use crate::node::apps::{AppClient, AppError, AppStream};

/// The stack of a dialing stream's thread.
const THREAD_STACK: usize = 128 * 1024;
/// Streams the node holds for the exit while it is busy.
const BACKLOG: usize = 1024;
/// How often an exit whose node went away tries to listen again.
const RELISTEN: Duration = Duration::from_secs(1);
/// How long the exit waits for a stream's request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the exit serves.
#[derive(Debug, Clone)]
pub struct ExitOptions {
    /// The node's app socket.
    pub app_socket: PathBuf,
    /// Its port on the node.
    pub port: u16,
    /// The nodes it serves; `None`: every node.
    pub clients: Option<Vec<PublicKey>>,
    /// The destination policy (its `own` and `mesh` filled in).
    pub policy: Policy,
    /// Connections at once, in all.
    pub streams: usize,
    /// Connections of one key at once.
    pub streams_per_client: usize,
    /// New connections of one key per second.
    pub rate_per_client: usize,
    /// Streams resolving or dialing at once.
    pub half_open: usize,
    /// For the resolution and the connection.
    pub dial_timeout: Duration,
}

/// The exit, listening on its node.
#[derive(Debug)]
pub struct SocksExit {
    listener: AppListener,
    app: AppClient,
    options: Arc<ExitOptions>,
    tally: Arc<Tally>,
}

struct Shared {
    options: Arc<ExitOptions>,
    app: AppClient,
    tally: Arc<Tally>,
    watcher: Watcher,
    half_open: AtomicUsize,
}

/// The host's own addresses with their prefix lengths, for [`Policy::own`].
pub fn own_addresses() -> io::Result<Vec<Prefix>> {
    Ok(skywire_dataplane::sys::netlink::list_addresses()?
        .into_iter()
        .map(|(_, prefix)| prefix)
        .collect())
}

impl SocksExit {
    /// Listen on the node.
    pub fn listen(options: ExitOptions) -> Result<Self, AppError> {
        crate::local::raise_fd_limit();
        let app = AppClient::new(&options.app_socket);
        let listener = app.listen(listen_request(&options))?;
        Ok(Self {
            listener,
            app,
            options: Arc::new(options),
            tally: Arc::new(Tally::default()),
        })
    }

    /// The figures, shared.
    pub fn tally(&self) -> Arc<Tally> {
        Arc::clone(&self.tally)
    }

    /// Serve until `stop` is set (checked between streams; the caller stops at once by
    /// exiting). When the node stops, the exit waits for it and listens again.
    pub fn serve(mut self, stop: &AtomicBool) -> Result<(), AppError> {
        let shared = Arc::new(Shared {
            watcher: Watcher::start(&self.app, Arc::clone(&self.tally), "exit")?,
            options: self.options,
            app: self.app,
            tally: self.tally,
            half_open: AtomicUsize::new(0),
        });
        while !stop.load(Ordering::Relaxed) {
            let incoming = match self.listener.next_incoming() {
                Ok(incoming) => incoming,
                // The node stopped: listen again as soon as it is back.
                Err(error) => {
                    log::warn!(
                        "skywire socks exit: the node ended the listener ({error}); waiting \
                         for the node"
                    );
                    self.listener = loop {
                        thread::sleep(RELISTEN);
                        if stop.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        if let Ok(listener) = shared.app.listen(listen_request(&shared.options)) {
                            break listener;
                        }
                    };
                    log::info!("skywire socks exit: the node is back; listening again");
                    continue;
                }
            };
            while shared.half_open.load(Ordering::Acquire) >= shared.options.half_open.max(1) {
                thread::sleep(Duration::from_millis(2));
            }
            shared.half_open.fetch_add(1, Ordering::AcqRel);
            let for_thread = Arc::clone(&shared);
            let started = thread::Builder::new()
                .name("socks-exit".to_owned())
                .stack_size(THREAD_STACK)
                .spawn(move || {
                    if let Ok(stream) = for_thread.app.accept(incoming.stream) {
                        serve_stream(&for_thread, stream, incoming.peer);
                    }
                    for_thread.half_open.fetch_sub(1, Ordering::AcqRel);
                });
            if started.is_err() {
                shared.half_open.fetch_sub(1, Ordering::AcqRel);
            }
        }
        Ok(())
    }
}

/// What the exit listens for on its node.
fn listen_request(options: &ExitOptions) -> ListenRequest {
    ListenRequest {
        port: options.port,
        backlog: BACKLOG,
        allow: options.clients.clone(),
    }
}

/// Read the request the client app forwarded.
fn read_request(stream: &mut AppStream) -> Result<(wire::Request, Vec<u8>), Option<Rep>> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut buf = Vec::with_capacity(wire::MAX_REQUEST_LEN);
    let mut chunk = [0u8; wire::MAX_REQUEST_LEN];
    loop {
        match wire::parse_request(&buf) {
            Ok(Some((request, len))) => {
                buf.truncate(len);
                return Ok((request, buf));
            }
            Ok(None) => {}
            Err(e) => return Err(e.rep()),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Err(None);
        }
        // Read no further than the longest request could reach.
        let want = wire::MAX_REQUEST_LEN.saturating_sub(buf.len()).max(1);
        match stream.read(chunk.get_mut(..want).unwrap_or_default()) {
            Ok(0) | Err(_) => return Err(None),
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
    }
}

fn reply(mut stream: AppStream, rep: Rep) {
    let _ = stream.write_all(&wire::reply(rep));
    let _ = stream.shutdown_write();
}

fn serve_stream(shared: &Shared, mut stream: AppStream, key: PublicKey) {
    let options = &shared.options;
    let limits = Limits {
        total: options.streams,
        per_key: options.streams_per_client,
        rate: options.rate_per_client,
    };
    let (request, _) = match read_request(&mut stream) {
        Ok(request) => request,
        Err(Some(rep)) => {
            shared.tally.refused(key);
            return reply(stream, rep);
        }
        Err(None) => return,
    };
    if let Err(full) = shared.tally.admit(key, limits, Instant::now()) {
        log::warn!(
            "skywire socks exit: {key}: refused {}: {full}",
            request.dest
        );
        return reply(stream, Rep::GeneralFailure);
    }
    let outcome = match request.command {
        Command::Bind => Err(Rep::CommandNotSupported),
        Command::UdpAssociate => {
            super::udp::exit_association(options, stream, key);
            shared.tally.ended(key, 0, 0, false);
            return;
        }
        Command::Connect => dial(options, &request.dest, request.port, &key),
    };
    match outcome {
        Ok(target) => {
            let _ = target.set_nodelay(true);
            if stream.write_all(&wire::reply(Rep::Succeeded)).is_err() {
                shared.tally.ended(key, 0, 0, true);
                return;
            }
            let id = stream.id();
            let watch = shared.watcher.expect(id, key);
            match stream.hand_over(&shared.app, OwnedFd::from(target), Some(watch)) {
                Ok(_) => {}
                Err(error) => {
                    shared.watcher.forget(id);
                    log::warn!(
                        "skywire socks exit: {key}: the node did not take the connection: {error}"
                    );
                    shared.tally.ended(key, 0, 0, true);
                }
            }
        }
        Err(rep) => {
            shared.tally.ended(key, 0, 0, false);
            shared.tally.refused(key);
            reply(stream, rep);
        }
    }
}

/// The addresses a destination may be dialed at, after the policy; or the reply.
pub fn candidates(
    policy: &Policy,
    dest: &Dest,
    port: u16,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, (Rep, String)> {
    let addrs: Vec<SocketAddr> = match dest {
        Dest::Ip(ip) => vec![SocketAddr::new(*ip, port)],
        Dest::Name(name) => match policy::numeric_host(name.as_str()) {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => {
                if let Err(refusal) = policy::check_name(name.as_str()) {
                    return Err((Rep::NotAllowed, refusal.to_string()));
                }
                resolve(name.as_str(), port, timeout).map_err(|why| (Rep::HostUnreachable, why))?
            }
        },
    };
    let mut refusals: Vec<(SocketAddr, Refusal)> = Vec::new();
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|addr| match policy.check(*addr) {
            Ok(()) => true,
            Err(refusal) => {
                refusals.push((*addr, refusal));
                false
            }
        })
        .collect();
    if allowed.is_empty() {
        let why = refusals
            .iter()
            .map(|(addr, refusal)| format!("{addr}: {refusal}"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(if refusals.is_empty() {
            (Rep::HostUnreachable, "no address".to_owned())
        } else {
            (Rep::NotAllowed, why)
        });
    }
    Ok(allowed)
}

/// The system resolver on a thread of its own, so that a slow one is bounded by `timeout`.
fn resolve(name: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, String> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let host = name.to_owned();
    let spawned = thread::Builder::new()
        .name("socks-resolve".to_owned())
        .stack_size(THREAD_STACK)
        .spawn(move || {
            let _ = tx.send((host.as_str(), port).to_socket_addrs().map(Vec::from_iter));
        });
    if spawned.is_err() {
        return Err("no thread for the resolver".to_owned());
    }
    match rx.recv_timeout(timeout) {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Ok(Ok(_)) => Err(format!("{name} has no address")),
        Ok(Err(e)) => Err(format!("{name} does not resolve: {e}")),
        Err(_) => Err(format!("{name} did not resolve within {timeout:?}")),
    }
}

/// Resolve, check, connect: the connection, or the reply to send.
fn dial(options: &ExitOptions, dest: &Dest, port: u16, key: &PublicKey) -> Result<TcpStream, Rep> {
    let deadline = Instant::now() + options.dial_timeout;
    let addrs =
        candidates(&options.policy, dest, port, options.dial_timeout).map_err(|(rep, why)| {
            log::warn!("skywire socks exit: {key}: refused {dest}:{port}: {why}");
            rep
        })?;
    // Alternate the families (RFC 8305), in the resolver's order within each.
    let (v6, v4): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs
        .into_iter()
        .partition(|a| matches!(a.ip(), IpAddr::V6(_)));
    let mut order = Vec::with_capacity(v6.len() + v4.len());
    let (mut a, mut b) = (v6.into_iter(), v4.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => break,
            (x, y) => order.extend(x.into_iter().chain(y)),
        }
    }
    let mut last = Rep::HostUnreachable;
    let count = order.len();
    for (i, addr) in order.into_iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Rep::TtlExpired);
        }
        // Leave the later candidates some of the time.
        let share = if i + 1 < count { left / 2 } else { left };
        match TcpStream::connect_timeout(&addr, share.max(Duration::from_millis(1))) {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                last = Rep::from_connect_error(&e);
                log::info!("skywire socks exit: {key}: {dest}:{port} at {addr}: {e}");
            }
        }
    }
    Err(last)
}

/// The policy an exit uses: `allow` and `deny_ports` as configured, `mesh` given, and
/// this host's addresses.
pub fn exit_policy(
    allow: Vec<policy::Exception>,
    deny_ports: Vec<u16>,
    mesh: Vec<Prefix>,
) -> io::Result<Policy> {
    Ok(Policy {
        allow,
        deny_ports,
        own: own_addresses()?,
        mesh,
    })
}
