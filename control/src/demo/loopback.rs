//! Real `skywire node` processes on loopback, for the demos and tests that need no root:
//! each with a fresh key, a free UDP port, its own folder and a config written by
//! [`ConfigFile`]. [`LoopbackMesh`] owns them; dropping it stops every node (SIGTERM, then
//! SIGKILL after 5 s) and then removes the folder, also when a demo fails half-way.

use core::time::Duration;
use std::fs;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Instant;

use rustix::process::{Pid, Signal, kill_process};
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::RouteSetup;
use skywire_dataplane::wire::RouteId;

use crate::config::{ConfigFile, NodeSection, derive_app_socket};
use crate::keyfile;
use crate::node::ctl::request_status;

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

/// Nodes on loopback in one scratch folder (see the module doc).
#[derive(Debug)]
pub struct LoopbackMesh {
    program: PathBuf,
    dir: PathBuf,
    /// The running nodes, in the order started.
    pub nodes: Vec<LoopbackNode>,
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
        let config = plan.dir.join("node.yaml");
        let socket = section.control_socket.clone();
        let app_socket = section
            .apps
            .socket
            .clone()
            .unwrap_or_else(|| derive_app_socket(&socket));
        ConfigFile::node(section)
            .with_comment(format!("node {} on loopback", plan.name))
            .write(&config)
            .map_err(|e| self.prepare(io::Error::other(e.to_string())))?;
        let node = self.spawn(plan, socket, app_socket)?;
        self.nodes.push(node);
        self.nodes.last().ok_or_else(|| LoopbackError::Start {
            name: plan.name.clone(),
            why: "lost".to_owned(),
        })
    }

    /// Stop node `index` (SIGTERM) and start it again from the same config: the same key,
    /// address and sockets. Returns once its control socket answers.
    pub fn restart(&mut self, index: usize) -> Result<(), LoopbackError> {
        let Some(old) = self.nodes.get_mut(index) else {
            return Err(LoopbackError::Start {
                name: format!("#{index}"),
                why: "no such node".to_owned(),
            });
        };
        stop_child(&mut old.child);
        let (plan, socket, app_socket) =
            (old.plan.clone(), old.socket.clone(), old.app_socket.clone());
        let node = self.spawn(&plan, socket, app_socket)?;
        if let Some(slot) = self.nodes.get_mut(index) {
            *slot = node;
        }
        Ok(())
    }

    /// Run `skywire node --config <plan's folder>/node.yaml` and wait for its control socket.
    fn spawn(
        &self,
        plan: &Planned,
        socket: PathBuf,
        app_socket: PathBuf,
    ) -> Result<LoopbackNode, LoopbackError> {
        let config = plan.dir.join("node.yaml");
        let log = plan.dir.join("node.log");
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| self.prepare(e))?;
        let err = file.try_clone().map_err(|e| self.prepare(e))?;
        let child = Command::new(&self.program)
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
        let mut node = LoopbackNode {
            plan: plan.clone(),
            socket,
            app_socket,
            log,
            child,
        };
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

    /// Two nodes A and B with a direct static route between them that carries app streams
    /// only (no prefixes, no TUN): the smallest mesh an app runs on.
    pub fn pair(program: &Path, label: &str) -> Result<Self, LoopbackError> {
        let mut mesh = Self::new(program, label)?;
        let a = mesh.plan("A")?;
        let b = mesh.plan("B")?;
        let route = |name: &str, peer: &Planned, out_id, in_id| RouteSetup {
            name: name.to_owned(),
            peer: peer.key,
            prefixes: Vec::new(),
            first_hop: peer.addr,
            out_id: route_id(out_id),
            in_id: route_id(in_id),
            peer_in_id: route_id(out_id),
            prev_hop: peer.addr,
            persistent_keepalive: None,
        };
        let mut sa = Self::section(&a);
        sa.routes = vec![route("to-b", &b, 100, 200)];
        let mut sb = Self::section(&b);
        sb.routes = vec![route("to-a", &a, 200, 100)];
        mesh.start(&a, sa)?;
        mesh.start(&b, sb)?;
        Ok(mesh)
    }
}

impl Drop for LoopbackMesh {
    fn drop(&mut self) {
        // The nodes first (they remove their sockets), then the folder.
        self.nodes.clear();
        if std::env::var_os("DEBUG_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A route id from a constant above zero.
pub fn route_id(n: u32) -> RouteId {
    RouteId::new(n).unwrap_or(RouteId::MIN)
}
