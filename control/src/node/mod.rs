//! The node as a library: [`Node::start`] brings up everything `skywire node` runs, and a
//! [`NodeHandle`] talks to it, typed.
//!
//! ```text
//!   skywire status, route, ping ──> ctl (control socket) ──┐
//!                                                          ▼
//!                          NodeHandle ── status, apply ──> engine (dataplane::engine)
//!                                │                           ▲  events: expiries,
//!                                └── requests, pings ──> uplink thread ── Agent (sans-IO) ──TCP──> manager
//! ```
//!
//! - [`agent`]: the node's side of the manager protocol, sans-IO: what the node owns
//!   (routes it added, links it declared, rules it holds), `INSTALL`/`REMOVE` into the
//!   engine, link probes and reports, user requests typed in and out.
//! - [`uplink`]: the thread around the agent: the manager connection (key proofs both
//!   ways, reconnection with backoff), engine events, and pings over routes (which need no
//!   manager).
//! - [`reconnect`]: sans-IO: when the uplink tries the manager again (soon after transient
//!   failures, slowly after refusals), what it logs, and the connection as `status` shows
//!   it.
//! - [`ctl`]: the local control socket (JSON lines) and its client, served from a
//!   [`NodeHandle`] (or a fake [`ctl::NodeApi`] in tests).
//! - [`metrics`]: the node's Prometheus metrics (`node.metrics`), written from the same
//!   status the control socket serves, on [`crate::metrics::MetricsServer`].
//! - [`apps`]: the app socket: streams to `(public key, port)` on other nodes for the
//!   programs on this machine, carried by the engine's stack ([`apps::Streams`],
//!   [`apps::Routes`]), and its client library.
//!
//! Starting order, so a failure leaves nothing behind: the control socket is bound first
//! (a second node on the same socket fails before touching the network), and the metrics
//! address, then the engine
//! (TUN device, UDP socket, configured routes), then the uplink and the control socket's
//! thread. [`Node::wait`] returns when the engine stops (after [`NodeHandle::shutdown`],
//! or a fatal error) and stops the rest; the TUN device and the socket file go with them.

pub mod agent;
pub mod apps;
pub mod ctl;
pub mod metrics;
pub mod reconnect;
pub mod reload;
pub mod state;
pub mod uplink;
pub mod usage;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::{
    self, EngineError, EngineGone, EngineHandle, GrantError, Heartbeat, NodeSetup, NodeStatus,
    RunningEngine,
};
use skywire_dataplane::route::Prefix;

use crate::config::{AcceptRule, AppsConfig, Config, ConfigError, MetricsConfig, NodeConfig};
use crate::local::StopSignal;
use crate::manager::proto::{ErrorKind, ProtoError};
use crate::metrics::MetricsServer;
use agent::{AgentParams, UserReply, UserRequest};
use apps::{AppServer, ManagerRoutes};
use ctl::{ControlServer, NodeApi};
use reload::{ReloadError, ReloadSummary};
use uplink::{ManagerAddress, PingError, PingReply, UplinkHandle};

/// How long a `ping` through the control socket waits for its pong.
pub const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a node did not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The config (or the key file it names) is bad.
    #[error(transparent)]
    Config(Box<ConfigError>),
    /// The control socket could not be created.
    #[error("cannot create the control socket {}", path.display())]
    ControlSocket {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The app socket could not be created.
    #[error("cannot create the app socket {}", path.display())]
    AppSocket {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The metrics address could not be bound.
    #[error("cannot serve metrics on {addr}")]
    Metrics {
        /// `node.metrics.listen`.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The engine failed to start or failed while running.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A thread of the node could not be started.
    #[error("cannot start the node's {what} thread")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl From<ConfigError> for NodeError {
    fn from(error: ConfigError) -> Self {
        Self::Config(Box::new(error))
    }
}

/// A running node: its engine, its uplink to the manager and its control socket.
#[derive(Debug)]
pub struct Node {
    handle: NodeHandle,
    engine: RunningEngine,
    uplink: JoinHandle<()>,
    control: JoinHandle<()>,
    apps: JoinHandle<()>,
    metrics: Option<JoinHandle<()>>,
    /// Stops the control socket's, the app socket's and the metrics' threads.
    control_stop: StopSignal,
    socket: PathBuf,
    app_socket: PathBuf,
    /// The bound transport address.
    pub listen: SocketAddr,
    /// The TUN device's name, if the node has one.
    pub tun_name: Option<String>,
    /// The manager's address, if the node registers with one.
    pub manager: Option<SocketAddr>,
    /// Where the metrics are served (`node.metrics`), if they are.
    pub metrics_listen: Option<SocketAddr>,
}

/// A typed handle on a running node, cheap to clone: what the control socket serves, and
/// what apps use to talk to their node in-process.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    public_key: PublicKey,
    engine: EngineHandle,
    uplink: UplinkHandle,
    /// The config file the node runs, for [`NodeHandle::reload`]: set by [`Node::start`],
    /// `None` for a node started from its parts.
    config: Arc<Mutex<Option<RunningConfig>>>,
    /// The usage ledger (`None`: the node keeps no state).
    meter: Option<usage::Meter>,
}

/// The config a node started with, and the one whose routes it runs now.
#[derive(Debug)]
struct RunningConfig {
    file: PathBuf,
    started: NodeConfig,
    running: NodeConfig,
}

/// How long a reload waits for the engine to apply its batch.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);

impl Node {
    /// Start the node a config describes: the engine (TUN device, UDP transport, configured
    /// routes and relays), the uplink to `node.manager` if set, the control socket at
    /// `node.control_socket` and the app socket (`node.apps`). Needs CAP_NET_ADMIN when the
    /// config has a TUN device, and nothing else.
    pub fn start(config: &Config) -> Result<Self, NodeError> {
        let setup = config.node_setup()?;
        let apps = config.apps_config()?;
        let socket = config.node.control_socket().to_owned();
        let manager = config.node.manager().map(|m| ManagerAddress {
            address: m.address,
            key: m.key,
            mark: setup.fwmark.map(|f| f.mark),
        });
        let endpoint = config.node.manager().map(|m| m.endpoint);
        let accept = config
            .node
            .manager()
            .map(|m| m.accept.clone())
            .unwrap_or_default();
        let state = Some(config.node.state_dir().to_owned());
        let node = Self::start_with(
            &setup,
            &socket,
            &apps,
            manager,
            endpoint,
            accept,
            state.as_deref(),
            config.node.metrics(),
        )?;
        *lock(&node.handle.config) = Some(RunningConfig {
            file: config.file.clone(),
            started: config.node.clone(),
            running: config.node.clone(),
        });
        Ok(node)
    }

    /// [`Self::start`] from its parts: the engine's setup, the control socket's path, the
    /// app socket's config, the manager to register with, the endpoint to register (the bound address when
    /// `None`), who may set up routes to this node ([`AcceptRule`]s), the folder of its
    /// state file ([`state`]; `None`: nothing is kept across restarts), and where to serve
    /// metrics, if anywhere.
    // Eight parts of one node; a struct of them is the next step if more come.
    #[allow(clippy::too_many_arguments)]
    pub fn start_with(
        setup: &NodeSetup,
        socket: &Path,
        apps: &AppsConfig,
        manager: Option<ManagerAddress>,
        endpoint: Option<SocketAddr>,
        accept: Vec<AcceptRule>,
        state_dir: Option<&Path>,
        metrics: Option<MetricsConfig>,
    ) -> Result<Self, NodeError> {
        let control_socket = |source| NodeError::ControlSocket {
            path: socket.to_owned(),
            source,
        };
        // Wakes the control and app sockets' accept threads when the node stops.
        let control_stop = StopSignal::new().map_err(control_socket)?;
        let server = ControlServer::bind(socket).map_err(control_socket)?;
        let app_server = AppServer::bind(apps).map_err(|source| NodeError::AppSocket {
            path: apps.socket.clone(),
            source,
        })?;
        let app_socket = app_server.path().to_owned();
        let metrics_server = metrics
            .map(|m| {
                MetricsServer::bind(m.listen, "node")
                    .map(|server| (server, m))
                    .map_err(|source| NodeError::Metrics {
                        addr: m.listen,
                        source,
                    })
            })
            .transpose()?;
        let state = state_dir.map(|dir| state::StateFile::load(dir, setup.public_key()));
        // The peers' initiations from before a restart are the engine's from its first
        // packet: none captured before the restart is read after it.
        let restored = state
            .as_ref()
            .map(|(_, owned)| owned.peers.iter().map(|&p| p.into()));
        let engine = match restored {
            Some(peers) => engine::start(&NodeSetup {
                peers: peers.collect(),
                ..setup.clone()
            })?,
            None => engine::start(setup)?,
        };
        let params = AgentParams {
            key: setup.public_key(),
            endpoint: endpoint.unwrap_or(engine.listen),
            tun: setup
                .tun
                .iter()
                .flat_map(|t| &t.addresses)
                .filter_map(|p| Prefix::new(p.addr(), if p.addr().is_ipv4() { 32 } else { 128 }))
                .collect(),
            reserved: setup
                .routes
                .iter()
                .map(|r| r.in_id.get())
                .chain(setup.relays.iter().map(|r| r.in_id.get()))
                .collect(),
            accept,
        };
        let meter = state_dir.map(|dir| {
            let ledger = usage::Ledger::open(dir, setup.public_key(), crate::civil::Day::today());
            usage::Meter::new(ledger, engine.handle.clone())
        });
        let (uplink_handle, uplink) = uplink::start(
            engine.handle.clone(),
            setup.private_key.clone(),
            manager,
            params,
            uplink::Keeping {
                state,
                meter: meter.clone(),
            },
        )
        .map_err(|source| NodeError::Thread {
            what: "uplink",
            source,
        })?;
        let handle = NodeHandle {
            public_key: setup.public_key(),
            engine: engine.handle.clone(),
            uplink: uplink_handle,
            config: Arc::new(Mutex::new(None)),
            meter,
        };
        let stop_all = |what: &'static str, source: io::Error, engine: RunningEngine| {
            control_stop.stop();
            handle.uplink.stop();
            let _ = handle.engine.shutdown();
            let _ = engine.wait();
            NodeError::Thread { what, source }
        };
        let control = match server.spawn(handle.clone(), control_stop.clone()) {
            Ok(thread) => thread,
            Err(source) => {
                let error = stop_all("control socket", source, engine);
                let _ = uplink.join();
                return Err(error);
            }
        };
        let routes = ManagerRoutes::new(handle.clone());
        let apps = match app_server.spawn(handle.engine.clone(), routes, control_stop.clone()) {
            Ok(thread) => thread,
            Err(source) => {
                let error = stop_all("app socket", source, engine);
                let _ = uplink.join();
                let _ = control.join();
                return Err(error);
            }
        };
        let metrics_listen = metrics_server.as_ref().map(|(s, _)| s.local_addr());
        let metrics = match metrics_server {
            None => None,
            Some((server, config)) => {
                let node = handle.clone();
                let options = metrics::MetricsOptions {
                    per_route: config.per_route,
                };
                let source = move || metrics::scrape(&node, options);
                match server.spawn("skywire-metrics", source, control_stop.clone()) {
                    Ok(thread) => Some(thread),
                    Err(source) => {
                        let error = stop_all("metrics", source, engine);
                        let _ = uplink.join();
                        let _ = control.join();
                        let _ = apps.join();
                        return Err(error);
                    }
                }
            }
        };
        Ok(Self {
            listen: engine.listen,
            tun_name: engine.tun_name.clone(),
            manager: manager.map(|m| m.address),
            metrics_listen,
            handle,
            engine,
            uplink,
            control,
            apps,
            metrics,
            control_stop,
            socket: socket.to_owned(),
            app_socket,
        })
    }

    /// A handle to talk to the node.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// The node's control socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The node's app socket.
    pub fn app_socket(&self) -> &Path {
        &self.app_socket
    }

    /// Run until the engine stops ([`NodeHandle::shutdown`], or a fatal error), then stop
    /// the uplink and the control socket (whose file is removed) and return how the
    /// engine ended.
    pub fn wait(self) -> Result<(), NodeError> {
        let result = self.engine.wait();
        // Every thread joined here is woken by its stop: the uplink's manager connection is
        // shut down, the sockets' accept threads wake from poll(2). Nothing waits out a
        // timeout, whatever the manager is doing.
        self.handle.uplink.stop();
        self.control_stop.stop();
        let _ = self.uplink.join();
        let _ = self.control.join();
        let _ = self.apps.join();
        if let Some(metrics) = self.metrics {
            let _ = metrics.join();
        }
        // The servers remove their sockets when they stop; make sure of it on every path.
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.app_socket);
        result.map_err(NodeError::from)
    }
}

impl NodeHandle {
    /// The node's public key.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// A snapshot of the node, waiting at most `timeout` for the engine.
    pub fn status(&self, timeout: Duration) -> Result<NodeStatus, EngineGone> {
        self.engine.status(timeout)
    }

    /// Ask the node manager, through the node's uplink.
    pub fn manager(&self, request: UserRequest) -> Result<UserReply, ProtoError> {
        if self.uplink.manager().is_none() {
            return Err(ProtoError::new(
                ErrorKind::Unavailable,
                "this node has no manager (node.manager in its config)",
            ));
        }
        self.uplink.manager_request(request)
    }

    /// One round trip over the route to `peer`, waiting at most `timeout`.
    pub fn ping(&self, peer: PublicKey, timeout: Duration) -> Result<PingReply, PingError> {
        self.uplink.ping(peer, timeout)
    }

    /// Ask the engine to stop: it tells its peers, removes the TUN device, and
    /// [`Node::wait`] returns.
    pub fn shutdown(&self) -> Result<(), EngineGone> {
        // The engine's counts since the last ask go into the ledger while it still runs.
        if let Some(meter) = &self.meter {
            let _ = meter.update(std::time::Instant::now(), usage::Save::Now);
        }
        self.engine.shutdown()
    }

    /// The node's usage ledger from `since` to `until`, brought up to date
    /// ([`usage`]); `None` when the node keeps no state.
    pub fn usage(
        &self,
        since: crate::civil::Day,
        until: crate::civil::Day,
    ) -> Option<Result<Vec<usage::DayRecord>, crate::atomic_file::StateError>> {
        self.meter.as_ref().map(|m| m.days(since, until))
    }

    /// Read the node's config file again, check it whole (the key file too), and apply
    /// what changed in its routes and relay rules in one engine batch ([`reload`]). A bad
    /// file or a refused batch changes nothing. One reload at a time.
    pub fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        let mut guard = lock(&self.config);
        let Some(config) = guard.as_mut() else {
            return Err(ReloadError::NoConfig);
        };
        let new = Config::load(&config.file)?;
        // The whole file, as a start would read it: the key it names, the apps' section.
        new.node_setup()?;
        new.apps_config()?;
        let reload::ReloadPlan {
            changes,
            mut summary,
        } = reload::plan(&config.running, &new.node);
        summary.restart_needed = reload::restart_needed(&config.started, &new.node);
        if !changes.is_empty() {
            self.engine.apply(changes, RELOAD_TIMEOUT)??;
        }
        config.running = new.node;
        Ok(summary)
    }

    /// Have the engine's event loop poll `heartbeat` once per turn (the systemd watchdog,
    /// [`crate::notify::Notifier::heartbeat`]): its beats stop when the loop hangs.
    pub fn set_heartbeat(&self, heartbeat: Heartbeat) -> Result<(), EngineGone> {
        self.engine.set_heartbeat(heartbeat)
    }

    /// **Test hook** ([`EngineHandle::stall`]): block the engine's loop for `duration`.
    #[doc(hidden)]
    pub fn stall_engine(&self, duration: Duration) -> Result<(), EngineGone> {
        self.engine.stall(duration)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl NodeApi for NodeHandle {
    fn status(&self, timeout: Duration) -> Result<NodeStatus, EngineGone> {
        NodeHandle::status(self, timeout)
    }

    fn manager(&self, request: UserRequest) -> Result<UserReply, ProtoError> {
        NodeHandle::manager(self, request)
    }

    fn manager_link(&self) -> Option<reconnect::ManagerLink> {
        self.uplink.manager_link()
    }

    fn ping(&self, peer: PublicKey) -> Result<PingReply, PingError> {
        NodeHandle::ping(self, peer, PING_TIMEOUT)
    }

    fn grant(
        &self,
        peer: PublicKey,
        prefixes: Vec<Prefix>,
        timeout: Duration,
    ) -> Result<Result<(), GrantError>, EngineGone> {
        self.engine.grant(peer, prefixes, timeout)
    }

    fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        NodeHandle::reload(self)
    }

    fn usage(
        &self,
        since: crate::civil::Day,
        until: crate::civil::Day,
    ) -> Option<Result<(PublicKey, Vec<usage::DayRecord>), crate::atomic_file::StateError>> {
        NodeHandle::usage(self, since, until).map(|r| r.map(|days| (self.public_key, days)))
    }
}
