//! Real `skywire node` processes on loopback, for the demos and tests that need no root:
//! each with a fresh key, a free UDP port, its own folder and a config written by
//! [`ConfigFile`]; and, for those that need routes set up on demand, one `skywire manager`
//! beside them ([`LoopbackMesh::start_manager`]). [`LoopbackMesh`] owns them; dropping it
//! stops every node, then the manager (SIGTERM, then SIGKILL after 5 s), and then removes
//! the folder, also when a demo fails half-way.
//!
//! Nodes start with none of systemd's notification variables, even when the demo itself
//! runs under systemd: a node that inherited `NOTIFY_SOCKET` would speak for the demo's
//! unit. A [`Launch`] gives a node the variables it should have (`skywire demo daemon`
//! plays systemd that way).

use core::time::Duration;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Instant;

use rustix::process::{Pid, Signal, kill_process};
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::RouteSetup;
use skywire_dataplane::wire::RouteId;

use crate::config::{
    AcceptRule, ConfigFile, ManagerLink, ManagerSection, NodeSection, derive_app_socket,
};
use crate::keyfile;
use crate::node::ctl::request_status;
use crate::notify;

/// How long a node gets to answer on its control socket.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the mesh could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    /// Making its folder, keys or configs failed.
    #[error("cannot prepare the nodes in {}", dir.display())]
    Prepare {
        /// The mesh's folder.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A node did not start.
    #[error("node {name} did not start: {why}")]
    Start {
        /// Its name.
        name: String,
        /// What happened, with its log.
        why: String,
    },
}

/// A node made but not started: its key, its address and its folder.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Its name (A, B, ...).
    pub name: String,
    /// Its public key.
    pub key: PublicKey,
    /// Its UDP transport address on loopback.
    pub addr: SocketAddr,
    /// Its folder (key file, config, sockets, log).
    pub dir: PathBuf,
}

impl Planned {
    /// Its config file (written by [`LoopbackMesh::start`] or [`LoopbackMesh::write_config`]).
    pub fn config(&self) -> PathBuf {
        self.dir.join("node.yaml")
    }
}

/// How a node process is started, beyond its config: what [`LoopbackMesh::start`] does by
/// default, and what a demo that plays systemd needs instead.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// Variables set in its environment (after systemd's are taken out: see the module
    /// docs).
    pub env: Vec<(String, OsString)>,
    /// Also set `WATCHDOG_PID` to the node's own pid, as systemd does. systemd knows the
    /// pid between its fork and its exec; `Command` offers no safe hook there, so the node
    /// is started through `/bin/sh`, which exports its own pid and then execs the node in
    /// its place: same process, same pid.
    pub watchdog_pid: bool,
    /// Return as soon as the process runs, without waiting for its control socket: for a
    /// caller that watches the start itself (its notification socket, say).
    pub no_wait: bool,
}

/// A running node process.
#[derive(Debug)]
pub struct LoopbackNode {
    /// What it was made from.
    pub plan: Planned,
    /// Its control socket.
    pub socket: PathBuf,
    /// Its app socket.
    pub app_socket: PathBuf,
    log: PathBuf,
    launch: Launch,
    child: Child,
}

impl LoopbackNode {
    /// What the node logged so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it still runs (reaping it if it ended).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Send it `signal`.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| io::Error::other("no such pid"))?;
        kill_process(pid, signal).map_err(io::Error::from)
    }

    /// `kill -9`: SIGKILL, and reaped. It leaves what a crash leaves (its control socket,
    /// its state file); [`LoopbackMesh::restart`] starts it again.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LoopbackNode {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// Stop a child process: SIGTERM, then SIGKILL if it is still there after 5 s; reaped.
/// One already reaped is left alone (its pid may belong to another process by now).
pub fn stop_child(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if let Some(pid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) {
        let _ = kill_process(pid, Signal::TERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A `skywire manager` process on loopback, started by [`LoopbackMesh::start_manager`].
#[derive(Debug)]
pub struct LoopbackManager {
    /// Its public key, for the nodes' `node.manager.key`.
    pub key: PublicKey,
    /// The TCP address it listens on.
    pub listen: SocketAddr,
    /// Its folder (key file, config, log).
    pub dir: PathBuf,
    child: Child,
}

impl LoopbackManager {
    /// What it logged so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(self.dir.join("manager.log")).unwrap_or_default()
    }
}

impl Drop for LoopbackManager {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// Nodes on loopback in one scratch folder (see the module doc).
#[derive(Debug)]
pub struct LoopbackMesh {
    program: PathBuf,
    dir: PathBuf,
    /// The running nodes, in the order started.
    pub nodes: Vec<LoopbackNode>,
    /// The manager, once started.
    pub manager: Option<LoopbackManager>,
}

impl LoopbackMesh {
    /// An empty mesh in a fresh folder named after `label` under the temporary directory;
    /// its nodes run `program` (the `skywire` binary).
    pub fn new(program: &Path, label: &str) -> Result<Self, LoopbackError> {
        let dir = std::env::temp_dir().join(format!("skywire-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).map_err(|source| LoopbackError::Prepare {
            dir: dir.clone(),
            source,
        })?;
        Ok(Self {
            program: program.to_owned(),
            dir,
            nodes: Vec::new(),
            manager: None,
        })
    }

    /// The mesh's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn prepare(&self, source: io::Error) -> LoopbackError {
        LoopbackError::Prepare {
            dir: self.dir.clone(),
            source,
        }
    }

    /// Make a node's folder, key and address (not started yet).
    pub fn plan(&self, name: &str) -> Result<Planned, LoopbackError> {
        let dir = self.dir.join(name.to_lowercase());
        fs::create_dir(&dir).map_err(|e| self.prepare(e))?;
        let key = keyfile::write_new_key(dir.join("node.key"))
            .map_err(|e| self.prepare(io::Error::other(e.to_string())))?;
        // Bound and released; the node binds it a moment later.
        let addr = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map_err(|e| self.prepare(e))?;
        Ok(Planned {
            name: name.to_owned(),
            key,
            addr,
            dir,
        })
    }

    /// A node section for `plan`: its key, address and control socket in its folder, and
    /// every other value at its default.
    pub fn section(plan: &Planned) -> NodeSection {
        let mut section = NodeSection::new("node.key");
        section.listen = plan.addr;
        section.control_socket = plan.dir.join("ctl").join("node.sock");
        section.state_dir = plan.dir.join("state");
        section
    }

    /// Write `section` as the node's config and start it; returns once its control socket
    /// answers.
    pub fn start(
        &mut self,
        plan: &Planned,
        section: NodeSection,
    ) -> Result<&LoopbackNode, LoopbackError> {
        self.start_with(plan, section, Launch::default())
    }

    /// [`Self::start`], started as `launch` says (and restarted the same way).
    pub fn start_with(
        &mut self,
        plan: &Planned,
        section: NodeSection,
        launch: Launch,
    ) -> Result<&LoopbackNode, LoopbackError> {
        let socket = section.control_socket.clone();
        let app_socket = section
            .apps
            .socket
            .clone()
            .unwrap_or_else(|| derive_app_socket(&socket));
        self.write_config(plan, section)?;
        let node = self.spawn(plan, socket, app_socket, launch)?;
        self.nodes.push(node);
        self.nodes.last().ok_or_else(|| LoopbackError::Start {
            name: plan.name.clone(),
            why: "lost".to_owned(),
        })
    }

    /// Write `section` as the node's config file ([`Planned::config`]), through the
    /// config's typed writer; a running node reads it at its next reload.
    pub fn write_config(&self, plan: &Planned, section: NodeSection) -> Result<(), LoopbackError> {
        ConfigFile::node(section)
            .with_comment(format!("node {} on loopback", plan.name))
            .write(plan.config())
            .map_err(|e| self.prepare(io::Error::other(e.to_string())))
    }

    /// The running node named `name`, and its index in [`Self::nodes`].
    pub fn node(&self, name: &str) -> Option<(usize, &LoopbackNode)> {
        self.nodes
            .iter()
            .enumerate()
            .find(|(_, node)| node.plan.name == name)
    }

    /// Stop node `index` (SIGTERM; nothing if it is gone already, after
    /// [`LoopbackNode::kill`] say) and start it again from the same config: the same key,
    /// address, sockets and [`Launch`]. Returns once its control socket answers, unless
    /// the launch says not to wait.
    pub fn restart(&mut self, index: usize) -> Result<(), LoopbackError> {
        let Some(old) = self.nodes.get_mut(index) else {
            return Err(LoopbackError::Start {
                name: format!("#{index}"),
                why: "no such node".to_owned(),
            });
        };
        stop_child(&mut old.child);
        let (plan, socket, app_socket, launch) = (
            old.plan.clone(),
            old.socket.clone(),
            old.app_socket.clone(),
            old.launch.clone(),
        );
        let node = self.spawn(&plan, socket, app_socket, launch)?;
        if let Some(slot) = self.nodes.get_mut(index) {
            *slot = node;
        }
        Ok(())
    }

    /// Run `skywire node --config <plan's folder>/node.yaml` and, unless `launch` says not
    /// to, wait for its control socket.
    fn spawn(
        &self,
        plan: &Planned,
        socket: PathBuf,
        app_socket: PathBuf,
        launch: Launch,
    ) -> Result<LoopbackNode, LoopbackError> {
        let config = plan.config();
        let log = plan.dir.join("node.log");
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| self.prepare(e))?;
        let err = file.try_clone().map_err(|e| self.prepare(e))?;
        let mut command = if launch.watchdog_pid {
            // See `Launch::watchdog_pid`: `$$` is the shell's pid, which `exec` hands on.
            let mut sh = Command::new("/bin/sh");
            sh.arg("-c")
                .arg(r#"WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$0" "$@""#)
                .arg(&self.program);
            sh
        } else {
            Command::new(&self.program)
        };
        for var in notify::ENV_VARS {
            command.env_remove(var);
        }
        let child = command
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .arg("node")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| LoopbackError::Start {
                name: plan.name.clone(),
                why: format!("cannot run {}: {e}", self.program.display()),
            })?;
        let no_wait = launch.no_wait;
        let mut node = LoopbackNode {
            plan: plan.clone(),
            socket,
            app_socket,
            log,
            launch,
            child,
        };
        if no_wait {
            return Ok(node);
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if request_status(&node.socket, Duration::from_millis(500)).is_ok() {
                return Ok(node);
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                return Err(LoopbackError::Start {
                    name: plan.name.clone(),
                    why: format!("it exited with {status}:\n{}", node.log_text()),
                });
            }
            if Instant::now() >= deadline {
                return Err(LoopbackError::Start {
                    name: plan.name.clone(),
                    why: format!("no answer within {START_TIMEOUT:?}:\n{}", node.log_text()),
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start a `skywire manager` in the folder `manager` of the mesh: a fresh key, a free
    /// TCP port on loopback, the defaults of [`ManagerSection`] changed by `configure`
    /// (its `links`, say). Returns once it accepts connections; it is stopped after the
    /// nodes when the mesh is dropped.
    pub fn start_manager(
        &mut self,
        configure: impl FnOnce(&mut ManagerSection),
    ) -> Result<&LoopbackManager, LoopbackError> {
        let dir = self.dir.join("manager");
        fs::create_dir(&dir).map_err(|e| self.prepare(e))?;
        let key = keyfile::write_new_key(dir.join("manager.key"))
            .map_err(|e| self.prepare(io::Error::other(e.to_string())))?;
        let mut section = ManagerSection::new("manager.key");
        section.listen = free_tcp_addr().map_err(|e| self.prepare(e))?;
        configure(&mut section);
        let listen = section.listen;
        let config = dir.join("manager.yaml");
        ConfigFile::manager(section)
            .with_comment("the manager of the loopback mesh")
            .write(&config)
            .map_err(|e| self.prepare(io::Error::other(e.to_string())))?;
        let log = fs::File::create(dir.join("manager.log")).map_err(|e| self.prepare(e))?;
        let err = log.try_clone().map_err(|e| self.prepare(e))?;
        let mut command = Command::new(&self.program);
        for var in notify::ENV_VARS {
            command.env_remove(var);
        }
        let child = command
            .arg("manager")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| LoopbackError::Start {
                name: "manager".to_owned(),
                why: format!("cannot run {}: {e}", self.program.display()),
            })?;
        let mut manager = LoopbackManager {
            key,
            listen,
            dir,
            child,
        };
        // Nodes that found nothing listening would wait for their next try (up to 2 s).
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&listen, Duration::from_millis(500)).is_err() {
            let why = if let Ok(Some(status)) = manager.child.try_wait() {
                format!("it exited with {status}:\n{}", manager.log_text())
            } else if Instant::now() >= deadline {
                format!(
                    "not listening within {START_TIMEOUT:?}:\n{}",
                    manager.log_text()
                )
            } else {
                thread::sleep(Duration::from_millis(20));
                continue;
            };
            return Err(LoopbackError::Start {
                name: "manager".to_owned(),
                why,
            });
        }
        Ok(self.manager.insert(manager))
    }

    /// A node section for `plan` ([`Self::section`]) registered with `manager`, letting
    /// the route ends of `accept` in.
    pub fn managed_section(
        plan: &Planned,
        manager: &LoopbackManager,
        accept: Vec<AcceptRule>,
    ) -> NodeSection {
        let mut section = Self::section(plan);
        section.manager = Some(ManagerLink {
            address: manager.listen,
            key: manager.key,
            endpoint: plan.addr,
            accept,
        });
        section
    }

    /// Two nodes A and B with a direct static route between them that carries app streams
    /// only (no prefixes, no TUN): the smallest mesh an app runs on.
    pub fn pair(program: &Path, label: &str) -> Result<Self, LoopbackError> {
        let mut mesh = Self::new(program, label)?;
        let a = mesh.plan("A")?;
        let b = mesh.plan("B")?;
        let mut sa = Self::section(&a);
        sa.routes = vec![direct_route("to-b", &b, 100, 200)];
        let mut sb = Self::section(&b);
        sb.routes = vec![direct_route("to-a", &a, 200, 100)];
        mesh.start(&a, sa)?;
        mesh.start(&b, sb)?;
        Ok(mesh)
    }
}

impl Drop for LoopbackMesh {
    fn drop(&mut self) {
        // The nodes first (they remove their sockets), then the manager (so no node sees
        // it go and logs it), then the folder.
        self.nodes.clear();
        self.manager = None;
        if std::env::var_os("DEBUG_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A route id from a constant above zero.
pub fn route_id(n: u32) -> RouteId {
    RouteId::new(n).unwrap_or(RouteId::MIN)
}

/// A static route straight to `peer` (no relay) that carries app streams only (no
/// prefixes): packets leave with `out_id` (the peer's `in_id` for it) and arrive with
/// `in_id`.
pub fn direct_route(name: &str, peer: &Planned, out_id: u32, in_id: u32) -> RouteSetup {
    RouteSetup {
        name: name.to_owned(),
        peer: peer.key,
        prefixes: Vec::new(),
        first_hop: peer.addr,
        out_id: route_id(out_id),
        in_id: route_id(in_id),
        peer_in_id: route_id(out_id),
        prev_hop: peer.addr,
        persistent_keepalive: None,
    }
}

/// A free TCP address on loopback: bound and released, for a process to bind a moment
/// later (as [`LoopbackMesh::plan`] does for UDP).
pub fn free_tcp_addr() -> io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr())
}
