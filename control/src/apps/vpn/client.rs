//! `skywire vpn client`: this machine's traffic through an exit node.
//!
//! The client is an app beside its node (root: it changes routing, nftables, sysctls and
//! DNS). It converges in steps that each fail closed, recording every change in its state
//! file ([`super::state`]) before making it:
//!
//! 1. **Lock** the state file (one client per machine) and take over what a crashed client
//!    left: its recorded originals (sysctls, DNS) stay the originals.
//! 2. With the kill switch (`--lockdown`), its nftables chains first: from here on nothing
//!    leaves but loopback, the TUN device and the node's marked packets.
//! 3. **The node**: its status must show a TUN device and a firewall mark (`node.fwmark`),
//!    or the node's own packets would loop into the tunnel.
//! 4. **The lease**: a stream to the exit app's port (44) on the exit node
//!    ([`super::proto`]); the exit knows this node by the route's key.
//! 5. **The grant**: the node may send anything to the exit, and take anything from it
//!    (`grant {exit, [0.0.0.0/0, ::/0]}`; cryptokey routing still gives every other mesh
//!    node's address to that node alone).
//! 6. The nftables table (marks for the reverse path filter, the kill switch with the
//!    leased addresses), `src_valid_mark`, the leased addresses on the TUN device, the
//!    table and rules of [`super::routing`], then DNS ([`super::dns`]).
//! 7. **Connected**: keepalives every 10 s (a dead exit is noticed within 35 s, a
//!    restarted one at the next keepalive, which its stack resets). When the stream, the
//!    node or the exit goes, the client is `reconnecting`: the kernel state stays as it is
//!    (the blackholes close the table when the TUN device goes) and it starts again at 3.
//!
//! SIGINT or SIGTERM (`skywire vpn down`) releases the lease and undoes everything in the
//! reverse order ([`teardown`]). The kill switch stays when it was configured
//! (`vpn.client.lockdown: true`) until `vpn down --unlock`.

use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::Fwmark;
use skywire_dataplane::route::Prefix;
use skywire_dataplane::sys::netlink;
use skywire_dataplane::sys::netns::interface_index;

use super::dns::{DnsError, Resolver};
use super::nft::{self, ClientRules, IfName, NftError, Table};
use super::proto::{self, ErrorKind, LeaseReply, LineReader, Reply, Request};
use super::routing::{self, Route};
use super::state::{Address, ClientState, Phase, unix_now};
use super::sysctl::{self, PROC_SYS, SysctlError};
use crate::atomic_file::StateError;
use crate::node::apps::{AppClient, AppError, AppStream};
use crate::node::ctl::client::{CtlError, request, request_status};
use crate::node::ctl::protocol::{Op, StatusReply};

/// Between keepalives on the lease stream.
pub const KEEPALIVE: Duration = Duration::from_secs(10);
/// No answer for this long ends the stream.
const SILENCE: Duration = Duration::from_secs(35);
/// How long to wait for the stream to the exit.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the node's control socket.
const CTL_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the loops look at the stop flag.
const TICK: Duration = Duration::from_millis(100);
/// The first pause before trying again, doubled up to [`MAX_BACKOFF`].
const BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What the client does.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The node's control socket (status, grants).
    pub control_socket: PathBuf,
    /// The node's app socket (the lease stream).
    pub app_socket: PathBuf,
    /// The exit node.
    pub exit: PublicKey,
    /// The exit app's port on it.
    pub exit_port: u16,
    /// The kill switch.
    pub lockdown: bool,
    /// The kill switch stays after `down` (configured, not only asked for).
    pub lockdown_configured: bool,
    /// Leave on-link LAN prefixes inside `lan_ranges` out of the tunnel.
    pub allow_lan: bool,
    /// What counts as LAN.
    pub lan_ranges: Vec<Prefix>,
    /// Set DNS to the exit's resolvers.
    pub dns: bool,
    /// The routing table.
    pub table: u32,
    /// The rules' priority.
    pub priority: u32,
    /// The state file.
    pub state: PathBuf,
    /// The TUN device's own (mesh) addresses, from `node.tun`.
    pub mesh: Vec<Prefix>,
    /// The TUN device's name, from `node.tun` (for the kill switch before the node
    /// answers).
    pub tun: String,
    /// The node's UDP port, from `node.listen` (likewise).
    pub node_port: u16,
}

/// Why the client stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Another client holds the state file.
    #[error("another VPN client is running (state file {0}); `skywire vpn down` stops it")]
    Running(PathBuf),
    /// The state file could not be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// The node's status lacks something the client needs.
    #[error("{0}")]
    Node(String),
    /// The exit refuses this node.
    #[error("the exit refuses this node: {0}")]
    Forbidden(String),
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
    /// DNS could not be set.
    #[error(transparent)]
    Dns(#[from] DnsError),
    /// A sysctl could not be changed.
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    /// The node refused the grant.
    #[error("the node refused the grant: {0}")]
    Grant(CtlError),
}

impl ClientError {
    /// The process exit code (sysexits): 78 a configuration problem, 77 refused, 75 busy,
    /// 1 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Node(_) => 78,
            Self::Forbidden(_) => 77,
            Self::Running(_) => 75,
            Self::Kernel { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => 77,
            _ => 1,
        }
    }
}

fn kernel(what: impl Into<String>) -> impl FnOnce(io::Error) -> ClientError {
    let what = what.into();
    move |source| ClientError::Kernel { what, source }
}

/// Run the client until `stop` is set (or a fatal error), then tear down.
pub fn run(options: &ClientOptions, stop: &AtomicBool) -> Result<(), ClientError> {
    let Some(_lock) = super::state::lock(&options.state)? else {
        return Err(ClientError::Running(options.state.clone()));
    };
    let mut state = take_over(options)?;
    state.save(&options.state)?;
    let result = serve(options, &mut state, stop);
    if let Err(e) = &result {
        log::error!("skywire vpn client: {e}");
    }
    state.enter(Phase::Stopping);
    let _ = state.save(&options.state);
    for problem in teardown(&mut state, &options.control_socket, false) {
        log::warn!("skywire vpn client: teardown: {problem}");
    }
    result
}

/// A fresh state, keeping what a previous client (crashed, or another exit) recorded: the
/// originals of sysctls and DNS, and what it added, which is removed now unless it is the
/// same again.
fn take_over(options: &ClientOptions) -> Result<ClientState, ClientError> {
    let previous: Option<ClientState> = super::state::load(&options.state, "client")?;
    let mut state = ClientState {
        pid: std::process::id(),
        phase: Phase::Connecting,
        since: unix_now(),
        exit: options.exit,
        exit_port: options.exit_port,
        control_socket: options.control_socket.clone(),
        tun: None,
        lease: None,
        routes: Vec::new(),
        rules: Vec::new(),
        addresses: Vec::new(),
        sysctls: Default::default(),
        dns: None,
        dns_servers: Vec::new(),
        lockdown: options.lockdown,
        lockdown_configured: options.lockdown_configured,
        lan: Vec::new(),
        table: false,
        problem: None,
    };
    if let Some(previous) = previous {
        log::warn!(
            "skywire vpn client: taking over from a client that stopped without cleaning up \
             (pid {}, {})",
            previous.pid,
            previous.phase
        );
        undo_routing(&previous);
        state.sysctls = previous.sysctls;
        state.dns = previous.dns;
        state.table = previous.table;
    }
    Ok(state)
}

/// Connect, hold, reconnect, until `stop`.
fn serve(
    options: &ClientOptions,
    state: &mut ClientState,
    stop: &AtomicBool,
) -> Result<(), ClientError> {
    if options.lockdown {
        // Closed before anything else: no lease yet, so only the kill switch.
        apply_table(options, state, None, options.node_port, None)?;
        state.save(&options.state)?;
    }
    let mut backoff = BACKOFF;
    while !stop.load(Ordering::Relaxed) {
        let attempt = connect(options, state, stop);
        let (stream, lease_started) = match attempt {
            Ok(connected) => connected,
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Again(problem)) => {
                if state.problem.as_deref() != Some(problem.as_str()) {
                    log::warn!("skywire vpn client: {problem}; trying again");
                    state.problem = Some(problem);
                    state.save(&options.state)?;
                }
                sleep(backoff, stop);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = BACKOFF;
        state.problem = None;
        state.enter(Phase::Connected);
        state.save(&options.state)?;
        if let Some(lease) = &state.lease {
            log::info!(
                "skywire vpn client: connected through {} as {}{} in {} ms",
                options.exit,
                lease.ipv4,
                lease.ipv6.map(|a| format!(" and {a}")).unwrap_or_default(),
                lease_started.elapsed().as_millis()
            );
        }
        let ended = hold(stream, stop);
        if stop.load(Ordering::Relaxed) {
            break;
        }
        log::warn!("skywire vpn client: {ended}; reconnecting");
        state.problem = Some(ended);
        state.enter(Phase::Reconnecting);
        state.save(&options.state)?;
    }
    Ok(())
}

/// Why an attempt to connect failed.
enum Attempt {
    /// Nothing will change by trying again.
    Fatal(ClientError),
    /// Try again shortly; the text says what is wrong.
    Again(String),
}

impl From<ClientError> for Attempt {
    fn from(e: ClientError) -> Self {
        match &e {
            // The TUN device went away under us: the node is restarting.
            ClientError::Kernel { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                Attempt::Again(e.to_string())
            }
            ClientError::State(_) | ClientError::Kernel { .. } | ClientError::Sysctl(_) => {
                Attempt::Fatal(e)
            }
            ClientError::Node(_) | ClientError::Forbidden(_) | ClientError::Running(_) => {
                Attempt::Fatal(e)
            }
            ClientError::Nft(_) | ClientError::Dns(_) | ClientError::Grant(_) => {
                Attempt::Again(e.to_string())
            }
        }
    }
}

/// Steps 3 to 6 of the module doc: the lease stream, and the lease applied.
fn connect(
    options: &ClientOptions,
    state: &mut ClientState,
    stop: &AtomicBool,
) -> Result<(LineReader<AppStream>, Instant), Attempt> {
    let started = Instant::now();
    let status = request_status(&options.control_socket, CTL_TIMEOUT)
        .map_err(|e| Attempt::Again(format!("the node does not answer: {e}")))?;
    let Some(tun) = status.tun.clone() else {
        return Err(Attempt::Fatal(ClientError::Node(
            "the node has no TUN device (node.tun in its config)".into(),
        )));
    };
    let Some(fwmark) = status.fwmark else {
        return Err(Attempt::Fatal(ClientError::Node(
            "the node's packets carry no firewall mark (node.fwmark: off), so the tunnel \
             would carry its own transport; remove `fwmark: off` from the node's config"
                .into(),
        )));
    };
    let (stream, lease) = take_lease(options)?;
    if stop.load(Ordering::Relaxed) {
        return Err(Attempt::Again("stopping".into()));
    }
    apply(options, state, &status, &tun, fwmark, &lease)?;
    Ok((stream, started))
}

/// Open the stream to the exit and ask for the lease.
fn take_lease(options: &ClientOptions) -> Result<(LineReader<AppStream>, LeaseReply), Attempt> {
    let app = AppClient::new(&options.app_socket);
    let mut stream = app
        .dial(options.exit, options.exit_port, DIAL_TIMEOUT)
        .map_err(|e| Attempt::Again(dial_problem(&e)))?;
    let again = |e: &dyn std::fmt::Display| Attempt::Again(format!("the lease stream: {e}"));
    stream
        .write_all(&proto::encode_request(Request::Lease))
        .map_err(|e| again(&e))?;
    stream
        .set_read_timeout(Some(DIAL_TIMEOUT))
        .map_err(|e| again(&e))?;
    let mut reader = LineReader::new(stream);
    let reply = match reader.read_line() {
        Ok(Some(line)) => proto::decode_reply(line).map_err(|e| again(&e))?,
        Ok(None) => return Err(Attempt::Again("the exit closed the lease stream".into())),
        Err(e) => return Err(again(&e)),
    };
    match reply {
        Reply::Granted(lease) => Ok((reader, lease)),
        Reply::Error {
            kind: ErrorKind::Forbidden,
            message,
        } => Err(Attempt::Fatal(ClientError::Forbidden(message))),
        Reply::Error { kind, message } => Err(Attempt::Again(format!(
            "the exit refused the lease ({kind:?}): {message}"
        ))),
        Reply::Keepalive => Err(Attempt::Again(
            "the exit answered a lease request with a keepalive".into(),
        )),
    }
}

fn dial_problem(e: &AppError) -> String {
    if e.is_unavailable() {
        format!("the node's app socket does not answer: {e}")
    } else {
        format!(
            "no stream to the exit (is `skywire vpn exit` running there, with this node among \
             its clients, and is there a route?): {e}"
        )
    }
}

/// Step 6: make the kernel use `lease`, recording each change before making it.
fn apply(
    options: &ClientOptions,
    state: &mut ClientState,
    status: &StatusReply,
    tun: &str,
    fwmark: Fwmark,
    lease: &LeaseReply,
) -> Result<(), ClientError> {
    let save = |state: &ClientState| state.save(&options.state);
    // Another address than last time: the old one's routes and addresses go first.
    if state
        .lease
        .as_ref()
        .is_some_and(|old| old.ipv4 != lease.ipv4 || old.ipv6 != lease.ipv6)
        || state.tun.as_deref().is_some_and(|old| old != tun)
    {
        undo_routing(state);
        state.routes.clear();
        state.rules.clear();
        state.addresses.clear();
    }
    state.tun = Some(tun.to_owned());
    state.lease = Some(lease.clone());
    let index = interface_index(tun).map_err(kernel(format!("find the TUN device {tun}")))?;
    let lan = if options.allow_lan {
        on_link_lan(index, &options.lan_ranges).map_err(kernel("list this machine's addresses"))?
    } else {
        Vec::new()
    };
    state.lan = lan.iter().map(Prefix::to_string).collect();
    apply_table(
        options,
        state,
        Some(lease),
        status.listen.port(),
        Some((tun, fwmark)),
    )?;
    save(state)?;

    let (any4, any6) = routing::defaults();
    let mut granted = vec![any4];
    if lease.ipv6.is_some() {
        granted.push(any6);
    }
    request::<()>(
        &options.control_socket,
        Op::Grant {
            peer: options.exit,
            prefixes: granted,
        },
        CTL_TIMEOUT,
    )
    .map_err(ClientError::Grant)?;

    for (key, value) in sysctl::client_plan() {
        if state.sysctls.record(Path::new(PROC_SYS), &key, &value)? {
            save(state)?;
            state.sysctls.set(Path::new(PROC_SYS), &key, &value)?;
        }
    }

    let mut addresses = vec![Address {
        dev: tun.to_owned(),
        prefix: host(IpAddr::V4(lease.ipv4)),
    }];
    if let Some(v6) = lease.ipv6 {
        addresses.push(Address {
            dev: tun.to_owned(),
            prefix: host(IpAddr::V6(v6)),
        });
    }
    for address in addresses {
        if !state.addresses.contains(&address) {
            state.addresses.push(address.clone());
            save(state)?;
        }
        match netlink::add_address(index, &address.prefix) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(kernel(format!("add {} to {tun}", address.prefix))(e));
            }
            _ => {}
        }
    }

    let routes = routing::client_routes(tun, &options.mesh, lease, options.table, &lan);
    for route in &routes {
        if !state.routes.contains(route) {
            state.routes.push(route.clone());
        }
    }
    let rules = routing::client_rules(fwmark, options.table, options.priority);
    for rule in rules {
        if !state.rules.contains(&rule) {
            state.rules.push(rule);
        }
    }
    save(state)?;
    for route in &routes {
        routing::add_route(route).map_err(kernel(format!("add the route {}", describe(route))))?;
    }
    for rule in &rules {
        routing::add_rule(rule).map_err(kernel("add the routing rule"))?;
    }

    if options.dns && !lease.dns.is_empty() {
        let resolver = Resolver::detect();
        if state.dns.is_none() {
            state.dns = Some(resolver.backup(tun)?);
            save(state)?;
        }
        resolver.apply(tun, &lease.dns)?;
        state.dns_servers = lease.dns.clone();
    }
    Ok(save(state)?)
}

/// Write the client's nftables table: the kill switch alone before a lease (`lease`
/// `None`), else everything for the lease.
fn apply_table(
    options: &ClientOptions,
    state: &mut ClientState,
    lease: Option<&LeaseReply>,
    node_port: u16,
    node: Option<(&str, Fwmark)>,
) -> Result<(), ClientError> {
    let tun_name = node.map_or_else(|| options.tun.clone(), |(t, _)| t.to_owned());
    let fwmark = node.map_or(Fwmark::DEFAULT, |(_, f)| f);
    let tun = IfName::new(&tun_name).map_err(|e| ClientError::Node(e.to_string()))?;
    let rules = ClientRules {
        tun,
        mark: fwmark.mark,
        mask: fwmark.mask,
        node_port,
        lease4: lease.map(|l| l.ipv4),
        lease6: lease.and_then(|l| l.ipv6),
        lockdown: options.lockdown,
        lan: state.lan.iter().filter_map(|p| p.parse().ok()).collect(),
    };
    state.table = true;
    state.save(&options.state)?;
    nft::run(&nft::client_table(&rules))?;
    Ok(())
}

/// The networks of this machine's addresses (not the TUN device's, not loopback's) that lie
/// inside `ranges`: the only LAN `--allow-lan` opens (a "LAN" prefix handed out by a
/// hostile network that is really the internet stays in the tunnel).
fn on_link_lan(tun_index: u32, ranges: &[Prefix]) -> io::Result<Vec<Prefix>> {
    let mut lan = Vec::new();
    for (index, address) in netlink::list_addresses()? {
        if index == tun_index || address.addr().is_loopback() {
            continue;
        }
        let net = routing::network(&address);
        let inside = ranges
            .iter()
            .any(|r| r.len() <= net.len() && r.contains(net.network()));
        if inside && !lan.contains(&net) {
            lan.push(net);
        }
    }
    Ok(lan)
}

/// Hold the lease: keepalives, and the stream watched for its end. Returns why it ended
/// (or "stopping").
fn hold(mut reader: LineReader<AppStream>, stop: &AtomicBool) -> String {
    if let Err(e) = reader.get_mut().set_read_timeout(Some(TICK)) {
        return format!("the lease stream: {e}");
    }
    let mut next_keepalive = Instant::now() + KEEPALIVE;
    let mut heard = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            let _ = reader
                .get_mut()
                .write_all(&proto::encode_request(Request::Release));
            return "stopping".into();
        }
        if Instant::now() >= next_keepalive {
            next_keepalive += KEEPALIVE;
            if let Err(e) = reader
                .get_mut()
                .write_all(&proto::encode_request(Request::Keepalive))
            {
                return format!("the lease stream broke: {e}");
            }
        }
        match reader.read_line() {
            Ok(Some(_)) => heard = Instant::now(),
            Ok(None) => return "the exit (or the node) ended the lease stream".into(),
            Err(proto::LineError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return format!("the lease stream broke: {e}"),
        }
        if heard.elapsed() > SILENCE {
            return "the exit stopped answering keepalives".into();
        }
    }
}

/// Remove the routes, rules and addresses `state` records (the kernel's own leftovers of a
/// client that is gone). Failures are ignored: what is gone is gone.
fn undo_routing(state: &ClientState) {
    for rule in &state.rules {
        let _ = routing::delete_rule(rule);
    }
    for route in state.routes.iter().rev() {
        let _ = routing::delete_route(route);
    }
    for address in &state.addresses {
        if let Ok(index) = interface_index(&address.dev) {
            let _ = netlink::delete_address(index, &address.prefix);
        }
    }
}

/// Undo everything `state` records, in the reverse order of [`run`]'s steps: DNS, rules,
/// routes, addresses, the exit's grant, sysctls, the nftables table (kept as the kill
/// switch alone when `state.lockdown_configured`, unless `unlock`), and the state file.
/// Every step is tried; the problems are returned.
pub fn teardown(state: &mut ClientState, control_socket: &Path, unlock: bool) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(backup) = &state.dns {
        match backup.restore() {
            Ok(()) => state.dns = None,
            Err(e) => problems.push(format!("DNS: {e}")),
        }
    }
    undo_routing(state);
    state.rules.clear();
    state.routes.clear();
    state.addresses.clear();
    if state.lease.take().is_some() {
        let revoke = Op::Grant {
            peer: state.exit,
            prefixes: Vec::new(),
        };
        // A node that is not running has no grant to take back.
        if let Err(e) = request::<()>(control_socket, revoke, CTL_TIMEOUT)
            && !e.is_unavailable()
        {
            problems.push(format!("taking back the exit's grant: {e}"));
        }
    }
    for e in state.sysctls.restore(Path::new(PROC_SYS)) {
        problems.push(e.to_string());
    }
    if state.table {
        let keep = state.lockdown_configured && !unlock;
        let text = if keep {
            // The kill switch alone (no lease): closed until `down --unlock`.
            let tun = state.tun.clone().unwrap_or_else(|| "sw0".to_owned());
            match IfName::new(&tun) {
                Ok(tun) => nft::client_table(&ClientRules {
                    tun,
                    mark: Fwmark::DEFAULT.mark,
                    mask: Fwmark::DEFAULT.mask,
                    node_port: 0,
                    lease4: None,
                    lease6: None,
                    lockdown: true,
                    lan: Vec::new(),
                }),
                Err(_) => nft::remove_table(Table::Client),
            }
        } else {
            nft::remove_table(Table::Client)
        };
        match nft::run(&text) {
            Ok(()) => state.table = keep,
            Err(e) => problems.push(e.to_string()),
        }
    }
    state.problem = None;
    problems
}

/// `ip/32` or `ip/128`.
pub fn host(ip: IpAddr) -> Prefix {
    let len = if ip.is_ipv4() { 32 } else { 128 };
    Prefix::new(ip, len).unwrap_or_else(|| unreachable!())
}

fn describe(route: &Route) -> String {
    format!("{} in table {}", route.prefix, route.table)
}

fn sleep(pause: Duration, stop: &AtomicBool) {
    let until = Instant::now() + pause;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        thread::sleep(TICK.min(until.saturating_duration_since(Instant::now())));
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn host_prefixes_are_whole_addresses() {
        assert_eq!(host(IpAddr::V4(Ipv4Addr::LOCALHOST)).len(), 32);
        assert_eq!(host(IpAddr::V6(Ipv6Addr::LOCALHOST)).len(), 128);
    }
}
