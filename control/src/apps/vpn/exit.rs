//! `skywire vpn exit`: the node's uplinks as the internet of its VPN clients.
//!
//! The exit is an app beside its node (root: it changes forwarding, routes and nftables).
//! It **converges** whenever its node is (back) up, each step idempotent and recorded in the
//! state file (`vpn.exit.state`) before it is made:
//!
//! 1. forwarding on the TUN device and the uplinks only ([`super::sysctl::exit_plan`]; the
//!    host's global forwarding and other tables' policies are never touched);
//! 2. the pool's prefixes routed into the TUN device (main table);
//! 3. the `inet skywire-exit` nftables table ([`super::nft::exit_table`]): masquerade for
//!    the pool's sources only, the exit's local address space refused (RFC 1918, CGNAT,
//!    link-local with 169.254.169.254, loopback, ULA, the exit's own subnets, the mesh),
//!    `allow_lan` exceptions, clients kept apart unless `allow_clients`, the exit's own
//!    services closed to clients, TCP MSS clamped to the route's MTU;
//! 4. the lease stream's port (44, the original's vpn-server port) on the node.
//!
//! Each client stream ([`super::proto`]) is one key's lease: the address is leased from
//! the [`Pool`] (the key's own first, so a reconnect keeps its address), saved, **granted**
//! to the key in the node's engine (`grant {peer, [v4/32, v6/128]}`: the client may send
//! from it, and packets to it go to that client), then answered. The lease is held while a
//! stream of the key is open, then for `lease_grace` (2 minutes), then freed and its grant
//! taken back; `release` frees it at once. Nothing is ever leased to two keys.
//!
//! SIGINT or SIGTERM takes every grant back, removes the table and the pool's routes, and
//! restores the sysctls; the leases stay in the state file (a restarted exit gives each key
//! its address again).

use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::route::Prefix;
use skywire_dataplane::sys::netlink;
use skywire_dataplane::sys::netns::interface_index;

use super::client::host;
use super::nft::{self, ExitRules, IfName, NftError, Table};
use super::pool::{Lease, LeaseState, Pool, PoolError, PoolState};
use super::proto::{self, ErrorKind, LeaseReply, LineReader, Reply, Request};
use super::routing::{self, Kind, Route};
use super::state::{self, unix_now};
use super::sysctl::{self, PROC_SYS, SysctlError, Sysctls};
use crate::atomic_file::{self, StateError};
use crate::node::apps::client::ListenRequest;
use crate::node::apps::{AppClient, AppListener, AppStream};
use crate::node::ctl::client::{CtlError, request, request_status};
use crate::node::ctl::protocol::Op;

/// How long a client may take to ask for its lease.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// A lease stream silent this long (three of the client's keepalives missed) is over.
const SILENCE: Duration = Duration::from_secs(35);
/// How long to wait for the node's control socket.
const CTL_TIMEOUT: Duration = Duration::from_secs(3);
/// Between looks at the node while it is away, and at expired leases.
const TICK: Duration = Duration::from_millis(200);
/// Lease streams waiting to be accepted.
const BACKLOG: usize = 64;

/// What the exit does.
#[derive(Debug, Clone)]
pub struct ExitOptions {
    /// The node's control socket (status, grants).
    pub control_socket: PathBuf,
    /// The node's app socket (the lease streams).
    pub app_socket: PathBuf,
    /// The lease port on the node.
    pub port: u16,
    /// The keys served; `None` serves every node.
    pub clients: Option<Vec<PublicKey>>,
    /// The IPv4 pool.
    pub pool4: Prefix,
    /// The IPv6 pool.
    pub pool6: Option<Prefix>,
    /// Local destinations allowed anyway.
    pub allow_lan: Vec<Prefix>,
    /// Clients may reach each other.
    pub allow_clients: bool,
    /// Resolvers offered to clients.
    pub dns: Vec<IpAddr>,
    /// The uplinks; empty: every interface that is up but loopback and the TUN device.
    pub uplinks: Vec<String>,
    /// How long a lease outlives its last stream.
    pub lease_grace: Duration,
    /// The state file.
    pub state: PathBuf,
    /// The mesh's prefixes (refused as destinations).
    pub mesh: Vec<Prefix>,
    /// The TUN device's MTU (told to clients).
    pub mtu: u16,
}

/// Why the exit stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExitError {
    /// The pool is unusable.
    #[error("vpn.exit.pool: {0}")]
    Pool(#[from] PoolError),
    /// Another exit holds the state file.
    #[error("another VPN exit is running (state file {0})")]
    Running(PathBuf),
    /// The state file could not be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// The node lacks something.
    #[error("{0}")]
    Node(String),
    /// A kernel change failed.
    #[error("cannot {what}: {source}")]
    Kernel {
        /// What.
        what: String,
        /// Why.
        source: io::Error,
    },
    /// nftables failed.
    #[error(transparent)]
    Nft(#[from] NftError),
    /// A sysctl could not be changed.
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
}

impl ExitError {
    /// The process exit code (sysexits): 78 configuration, 75 busy, 77 no permission, 1 else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Pool(_) | Self::Node(_) => 78,
            Self::Running(_) => 75,
            Self::Kernel { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => 77,
            _ => 1,
        }
    }
}

/// The exit's state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitState {
    /// The leases.
    #[serde(default)]
    pub pool: PoolState,
    /// Sysctls changed, with their originals.
    #[serde(default)]
    pub sysctls: Sysctls,
    /// The pool's routes.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// The nftables table is in place.
    #[serde(default)]
    pub table: bool,
    /// The TUN device in use.
    #[serde(default)]
    pub tun: Option<String>,
}

struct Shared {
    options: ExitOptions,
    pool: Mutex<Pool>,
    kernel: Mutex<ExitState>,
}

impl Shared {
    fn pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn kernel(&self) -> MutexGuard<'_, ExitState> {
        self.kernel.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Write the state file: the pool as it is now, with the kernel record.
    fn save(&self) -> Result<(), StateError> {
        let mut state = self.kernel().clone();
        state.pool = self.pool().to_state();
        state::save(&self.options.state, &state)
    }

    fn grant(&self, key: PublicKey, prefixes: Vec<Prefix>) -> Result<(), CtlError> {
        request::<()>(
            &self.options.control_socket,
            Op::Grant {
                peer: key,
                prefixes,
            },
            CTL_TIMEOUT,
        )
    }
}

/// The lease's addresses as prefixes to grant.
fn granted(lease: &Lease) -> Vec<Prefix> {
    let mut prefixes = vec![host(IpAddr::V4(lease.ipv4))];
    prefixes.extend(lease.ipv6.map(|a| host(IpAddr::V6(a))));
    prefixes
}

/// Run the exit until `stop` is set (or a fatal error), then tear down.
pub fn run(options: ExitOptions, stop: &AtomicBool) -> Result<(), ExitError> {
    let Some(_lock) = state::lock(&options.state)? else {
        return Err(ExitError::Running(options.state.clone()));
    };
    let state: ExitState = state::load(&options.state, "exit")?.unwrap_or_default();
    let pool = Pool::from_state(options.pool4, options.pool6, state.pool.clone(), unix_now())?;
    let shared = Arc::new(Shared {
        options,
        pool: Mutex::new(pool),
        kernel: Mutex::new(state),
    });
    shared.save()?;
    let expiry = {
        let shared = Arc::clone(&shared);
        thread::Builder::new()
            .name("vpn-expiry".into())
            .spawn(move || expire_loop(&shared))
            .map_err(|source| ExitError::Kernel {
                what: "start a thread".into(),
                source,
            })?
    };
    drop(expiry);
    let serving = {
        let shared = Arc::clone(&shared);
        thread::Builder::new()
            .name("vpn-exit".into())
            .spawn(move || serve(&shared))
            .map_err(|source| ExitError::Kernel {
                what: "start a thread".into(),
                source,
            })?
    };
    let mut result = Ok(());
    while !stop.load(Ordering::Relaxed) {
        if serving.is_finished() {
            result = serving.join().unwrap_or(Ok(()));
            break;
        }
        thread::sleep(TICK);
    }
    if let Err(e) = &result {
        log::error!("skywire vpn exit: {e}");
    }
    for problem in teardown(&shared) {
        log::warn!("skywire vpn exit: teardown: {problem}");
    }
    result
}

/// Converge and serve lease streams; again whenever the node comes back.
fn serve(shared: &Arc<Shared>) -> Result<(), ExitError> {
    let options = &shared.options;
    let app = AppClient::new(&options.app_socket);
    let mut said = String::new();
    loop {
        let listener = match converge(shared).and_then(|()| {
            app.listen(ListenRequest {
                port: options.port,
                backlog: BACKLOG,
                allow: options.clients.clone(),
            })
            .map_err(|e| Converge::Again(format!("cannot listen on port {}: {e}", options.port)))
        }) {
            Ok(listener) => listener,
            Err(Converge::Fatal(e)) => return Err(e),
            Err(Converge::Again(problem)) => {
                if problem != said {
                    log::warn!("skywire vpn exit: {problem}; trying again");
                    said = problem;
                }
                thread::sleep(TICK);
                continue;
            }
        };
        said.clear();
        log::info!(
            "skywire vpn exit: serving leases of {}{} on port {}",
            options.pool4,
            options
                .pool6
                .map(|p| format!(" and {p}"))
                .unwrap_or_default(),
            options.port
        );
        accept_loop(shared, &app, listener);
        log::warn!("skywire vpn exit: the node ended the listener; waiting for the node");
    }
}

/// Lease streams served at once: a thread each. Streams beyond are left unaccepted (the
/// node times them out, and refuses more once the listener's backlog is full), so a public exit's clients cannot make it spawn threads without bound.
const LEASE_STREAMS: usize = 1024;

fn accept_loop(shared: &Arc<Shared>, app: &AppClient, mut listener: AppListener) {
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let incoming = match listener.next_incoming() {
            Ok(incoming) => incoming,
            Err(_) => return,
        };
        if active.load(Ordering::Acquire) >= LEASE_STREAMS {
            continue;
        }
        active.fetch_add(1, Ordering::AcqRel);
        let shared = Arc::clone(shared);
        let app = app.clone();
        let done = Arc::clone(&active);
        let started = thread::Builder::new()
            .name("vpn-lease".into())
            .spawn(move || {
                if let Ok(stream) = app.accept(incoming.stream) {
                    serve_client(&shared, stream);
                }
                done.fetch_sub(1, Ordering::AcqRel);
            });
        if started.is_err() {
            active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

enum Converge {
    Fatal(ExitError),
    Again(String),
}

impl From<ExitError> for Converge {
    fn from(e: ExitError) -> Self {
        match &e {
            ExitError::Kernel { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                Converge::Again(e.to_string())
            }
            ExitError::Nft(_) => Converge::Again(e.to_string()),
            _ => Converge::Fatal(e),
        }
    }
}

impl From<StateError> for Converge {
    fn from(e: StateError) -> Self {
        Converge::Fatal(e.into())
    }
}

/// Steps 1 to 3 of the module doc, for the node as it is now.
fn converge(shared: &Shared) -> Result<(), Converge> {
    let options = &shared.options;
    let status = request_status(&options.control_socket, CTL_TIMEOUT)
        .map_err(|e| Converge::Again(format!("the node does not answer: {e}")))?;
    let Some(tun) = status.tun.clone() else {
        return Err(Converge::Fatal(ExitError::Node(
            "the node has no TUN device (node.tun in its config)".into(),
        )));
    };
    let kernel_err = |what: String| move |source| ExitError::Kernel { what, source };
    let index = interface_index(&tun).map_err(kernel_err(format!("find the TUN device {tun}")))?;
    let uplinks = if options.uplinks.is_empty() {
        up_interfaces(&tun).map_err(kernel_err("list the interfaces".into()))?
    } else {
        options.uplinks.clone()
    };
    let root = Path::new(PROC_SYS);
    for (key, value) in sysctl::exit_plan(root, &tun, &uplinks, options.pool6.is_some()) {
        if shared
            .kernel()
            .sysctls
            .record(root, &key, &value)
            .map_err(ExitError::from)?
        {
            shared.save()?;
            shared
                .kernel()
                .sysctls
                .set(root, &key, &value)
                .map_err(ExitError::from)?;
        }
    }
    let routes: Vec<Route> = std::iter::once(options.pool4)
        .chain(options.pool6)
        .map(|pool| Route {
            prefix: routing::network(&pool),
            kind: Kind::Device(tun.clone()),
            table: u32::from(libc::RT_TABLE_MAIN),
            metric: None,
            source: None,
        })
        .collect();
    {
        let mut kernel = shared.kernel();
        kernel.tun = Some(tun.clone());
        for route in &routes {
            if !kernel.routes.contains(route) {
                kernel.routes.push(route.clone());
            }
        }
        kernel.table = true;
    }
    shared.save()?;
    for route in &routes {
        routing::add_route(route)
            .map_err(kernel_err(format!("route {} into {tun}", route.prefix)))?;
    }
    let _ = index;
    let mut deny = nft::default_deny();
    let own = netlink::list_addresses().map_err(kernel_err("list the addresses".into()))?;
    for (_, address) in own {
        let net = routing::network(&address);
        if !deny.contains(&net) {
            deny.push(net);
        }
    }
    for mesh in &options.mesh {
        let net = routing::network(mesh);
        if !deny.contains(&net) {
            deny.push(net);
        }
    }
    let tun_name = IfName::new(&tun).map_err(|e| ExitError::Node(e.to_string()))?;
    let rules = ExitRules {
        tun: tun_name,
        pool4: options.pool4,
        pool6: options.pool6,
        allow: options.allow_lan.clone(),
        deny,
        allow_clients: options.allow_clients,
    };
    nft::run(&nft::exit_table(&rules)).map_err(ExitError::from)?;
    Ok(())
}

/// Interfaces that are up, but loopback and `tun`.
fn up_interfaces(tun: &str) -> io::Result<Vec<String>> {
    let mut up = Vec::new();
    for entry in fs::read_dir("/sys/class/net")? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "lo" || name == tun {
            continue;
        }
        let state = fs::read_to_string(entry.path().join("operstate")).unwrap_or_default();
        if matches!(state.trim(), "up" | "unknown") {
            up.push(name);
        }
    }
    up.sort();
    Ok(up)
}

/// One client's lease stream.
fn serve_client(shared: &Shared, stream: AppStream) {
    let options = &shared.options;
    let key = stream.peer();
    let mut reader = LineReader::new(stream);
    let reply = |reader: &mut LineReader<AppStream>, reply: &Reply| {
        reader.get_mut().write_all(&proto::encode_reply(reply))
    };
    let refuse = |reader: &mut LineReader<AppStream>, kind, message: String| {
        let _ = reply(reader, &Reply::Error { kind, message });
    };
    if options.clients.as_ref().is_some_and(|c| !c.contains(&key)) {
        refuse(
            &mut reader,
            ErrorKind::Forbidden,
            "not one of this exit's clients".into(),
        );
        return;
    }
    if reader
        .get_mut()
        .set_read_timeout(Some(ASK_TIMEOUT))
        .is_err()
    {
        return;
    }
    match reader.read_line() {
        Ok(Some(line)) => match proto::decode_request(line) {
            Ok(Request::Lease) => {}
            Ok(other) => {
                refuse(
                    &mut reader,
                    ErrorKind::BadRequest,
                    format!("{other:?} before a lease"),
                );
                return;
            }
            Err(e) => {
                refuse(&mut reader, ErrorKind::BadRequest, e.to_string());
                return;
            }
        },
        _ => return,
    }
    let lease = match shared.pool().lease(key, unix_now()) {
        Ok(lease) => lease,
        Err(e) => {
            refuse(&mut reader, ErrorKind::Exhausted, e.to_string());
            return;
        }
    };
    if let Err(e) = shared.save() {
        log::error!("skywire vpn exit: {e}");
    }
    if let Err(e) = shared.grant(key, granted(&lease)) {
        shared.pool().drop_holder(&key, unix_now());
        refuse(
            &mut reader,
            ErrorKind::Unavailable,
            format!("the node refused the grant: {e}"),
        );
        return;
    }
    log::info!(
        "skywire vpn exit: {key} holds {}{}",
        lease.ipv4,
        lease.ipv6.map(|a| format!(" and {a}")).unwrap_or_default()
    );
    let granted_reply = Reply::Granted(LeaseReply {
        ipv4: lease.ipv4,
        ipv6: lease.ipv6,
        dns: options.dns.clone(),
        mtu: options.mtu,
    });
    if reply(&mut reader, &granted_reply).is_err() {
        shared.pool().drop_holder(&key, unix_now());
        let _ = shared.save();
        return;
    }
    let _ = reader.get_mut().set_read_timeout(Some(SILENCE));
    let mut released = false;
    while let Ok(Some(line)) = reader.read_line() {
        match proto::decode_request(line) {
            Ok(Request::Keepalive) => {
                if reply(&mut reader, &Reply::Keepalive).is_err() {
                    break;
                }
            }
            Ok(Request::Release) => {
                released = true;
                break;
            }
            Ok(Request::Lease) => {
                if reply(&mut reader, &granted_reply).is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    if released {
        shared.pool().release(&key);
        if let Err(e) = shared.grant(key, Vec::new()) {
            log::warn!("skywire vpn exit: taking back {key}'s grant: {e}");
        }
        log::info!("skywire vpn exit: {key} released {}", lease.ipv4);
    } else {
        shared.pool().drop_holder(&key, unix_now());
    }
    if let Err(e) = shared.save() {
        log::error!("skywire vpn exit: {e}");
    }
}

/// Free leases whose grace is over, and take their grants back.
fn expire_loop(shared: &Shared) {
    let grace = shared.options.lease_grace.as_secs();
    loop {
        thread::sleep(Duration::from_secs(1));
        let expired = shared.pool().expire(unix_now(), grace);
        if expired.is_empty() {
            continue;
        }
        for lease in &expired {
            if let Err(e) = shared.grant(lease.key, Vec::new())
                && !e.is_unavailable()
            {
                log::warn!("skywire vpn exit: taking back {}'s grant: {e}", lease.key);
            }
            log::info!(
                "skywire vpn exit: {} expired, {} is free",
                lease.key,
                lease.ipv4
            );
        }
        if let Err(e) = shared.save() {
            log::error!("skywire vpn exit: {e}");
        }
    }
}

/// Take every grant back, remove the table and the pool's routes, restore the sysctls,
/// and save the leases (held ones now in their grace).
fn teardown(shared: &Shared) -> Vec<String> {
    let mut problems = Vec::new();
    let now = unix_now();
    let held: Vec<Lease> = shared
        .pool()
        .leases()
        .filter(|(_, state)| matches!(state, LeaseState::Held { .. }))
        .map(|(lease, _)| lease)
        .collect();
    for lease in &held {
        if let Err(e) = shared.grant(lease.key, Vec::new())
            && !e.is_unavailable()
        {
            problems.push(format!("taking back {}'s grant: {e}", lease.key));
        }
        while matches!(
            shared.pool().drop_holder(&lease.key, now),
            Some(LeaseState::Held { .. })
        ) {}
    }
    let mut kernel = shared.kernel();
    if kernel.table {
        match nft::run(&nft::remove_table(Table::Exit)) {
            Ok(()) => kernel.table = false,
            Err(e) => problems.push(e.to_string()),
        }
    }
    for route in kernel.routes.drain(..).rev() {
        if let Err(e) = routing::delete_route(&route) {
            problems.push(format!("removing the route to {}: {e}", route.prefix));
        }
    }
    for e in kernel.sysctls.restore(Path::new(PROC_SYS)) {
        problems.push(e.to_string());
    }
    drop(kernel);
    if let Err(e) = shared.save() {
        problems.push(e.to_string());
    }
    problems
}

/// What `skywire vpn exit status` shows: the leases from the state file and the table's
/// counters.
#[derive(Debug, Clone, Serialize)]
pub struct ExitStatus {
    /// Each lease.
    pub leases: Vec<LeaseStatus>,
    /// The nftables counters by name (packets, bytes); empty when the table is absent.
    pub counters: std::collections::BTreeMap<String, (u64, u64)>,
}

/// One lease in [`ExitStatus`].
#[derive(Debug, Clone, Serialize)]
pub struct LeaseStatus {
    /// The client key.
    pub key: String,
    /// Its IPv4 address.
    pub ipv4: std::net::Ipv4Addr,
    /// Its IPv6 address.
    pub ipv6: Option<std::net::Ipv6Addr>,
}

/// Read the exit's state file and its table's counters.
pub fn status(state: &Path) -> Result<ExitStatus, StateError> {
    let state = atomic_file::read_json::<ExitState>(state)?.unwrap_or_default();
    Ok(ExitStatus {
        leases: state
            .pool
            .leases
            .iter()
            .map(|l| LeaseStatus {
                key: l.key.to_string(),
                ipv4: l.ipv4,
                ipv6: l.ipv6,
            })
            .collect(),
        counters: nft::counters(Table::Exit).unwrap_or_default(),
    })
}
