//! The manager's TCP server: the I/O around [`ManagerCore`].
//!
//! One thread accepts; each connection gets a reader thread that runs the key proof
//! (with a 10 s limit) and then decodes frames, checking their MACs; one core thread owns
//! the [`ManagerCore`], the write halves and their MAC states, and serves events in order.
//! A connection that sends garbage, an oversized or truncated frame, a bad proof or a bad
//! tag is closed and logged; nothing else is touched. Writes have a timeout, so a node
//! that stops reading is closed instead of stalling the manager.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use skywire_dataplane::crypto::PrivateKey;

use super::core::{ConnId, ManagerCore, Output};
use super::proto::{
    self, Auth, AuthOk, Bytes32, Decoder, ErrorKind, Frame, Hello, Key, Mac, ProtoError, kind,
};

/// How long a new connection has to prove its key.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// A write that takes longer closes the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// At most this many connections at once; more are refused at accept.
pub const MAX_CONNECTIONS: usize = 4096;

enum Event {
    Authenticated {
        conn: ConnId,
        key: skywire_dataplane::crypto::PublicKey,
        writer: TcpStream,
        mac: Mac,
    },
    Frame(ConnId, Frame),
    Closed(ConnId, String),
}

/// A running manager.
#[derive(Debug)]
pub struct Manager {
    /// The bound address.
    pub listen: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
    core: Option<std::thread::JoinHandle<()>>,
}

impl Manager {
    /// Bind and start serving.
    pub fn start(listen: SocketAddr, key: PrivateKey, core: ManagerCore) -> io::Result<Self> {
        let listener = TcpListener::bind(listen)?;
        let listen = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (events, inbox) = unbounded();
        let key = Arc::new(key);
        let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accept = {
            let stop = Arc::clone(&stop);
            let events = events.clone();
            std::thread::Builder::new()
                .name("manager-accept".into())
                .spawn(move || accept_loop(&listener, &key, &events, &stop, &live))?
        };
        let core_thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("manager-core".into())
                .spawn(move || core_loop(core, &inbox, &stop))?
        };
        drop(events);
        Ok(Self {
            listen,
            stop,
            accept: Some(accept),
            core: Some(core_thread),
        })
    }

    /// Stop accepting, close every connection and return.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        if let Some(t) = self.core.take() {
            let _ = t.join();
        }
    }
}

fn log(line: &str) {
    eprintln!("skywire manager: {line}");
}

fn accept_loop(
    listener: &TcpListener,
    key: &Arc<PrivateKey>,
    events: &Sender<Event>,
    stop: &AtomicBool,
    live: &Arc<std::sync::atomic::AtomicUsize>,
) {
    let mut next: ConnId = 1;
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                if live.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                    log(&format!("{peer}: too many connections, refused"));
                    continue;
                }
                let conn = next;
                next += 1;
                let (key, events, live) = (Arc::clone(key), events.clone(), Arc::clone(live));
                live.fetch_add(1, Ordering::Relaxed);
                let spawned = std::thread::Builder::new()
                    .name(format!("manager-conn-{conn}"))
                    .spawn(move || {
                        let reason = serve_connection(conn, stream, &key, &events)
                            .err()
                            .unwrap_or_else(|| "closed".to_owned());
                        let _ = events.send(Event::Closed(conn, format!("{peer}: {reason}")));
                        live.fetch_sub(1, Ordering::Relaxed);
                    });
                if spawned.is_err() {
                    log("cannot start a connection thread");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                log(&format!("accept: {e}"));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The key proof, then frames until the connection ends.
fn serve_connection(
    conn: ConnId,
    mut stream: TcpStream,
    key: &PrivateKey,
    events: &Sender<Event>,
) -> Result<(), String> {
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(AUTH_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(WRITE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let nonce = Bytes32::random().map_err(|_| "no randomness".to_owned())?;
    let manager = key.public_key();
    let hello = Hello {
        version: proto::VERSION,
        manager: Key(manager),
        nonce,
    };
    let bytes =
        proto::encode(&Frame::request(kind::HELLO, 0, &hello), None).map_err(|e| e.to_string())?;
    stream.write_all(&bytes).map_err(|e| e.to_string())?;
    let mut decoder = Decoder::new();
    let frame = proto::read_frame(&mut stream, &mut decoder, None)?;
    let refuse = |stream: &mut TcpStream, id: u64, error: ProtoError| {
        if let Ok(bytes) = proto::encode(&Frame::error(kind::AUTH, id, &error), None) {
            let _ = stream.write_all(&bytes);
        }
        Err(error.to_string())
    };
    if frame.kind != kind::AUTH {
        return refuse(
            &mut stream,
            frame.id,
            ProtoError::new(ErrorKind::Unauthenticated, "expected AUTH"),
        );
    }
    let auth: Auth = match frame.parse() {
        Ok(auth) => auth,
        Err(e) => return refuse(&mut stream, frame.id, e),
    };
    let Some(keys) = proto::session_keys(
        key,
        &auth.node.0,
        &manager,
        &auth.node.0,
        &nonce,
        &auth.nonce,
    ) else {
        return refuse(
            &mut stream,
            frame.id,
            ProtoError::new(ErrorKind::Unauthenticated, "unusable node key"),
        );
    };
    if !proto::proof_matches(&keys.node_proof, &auth.proof) {
        return refuse(
            &mut stream,
            frame.id,
            ProtoError::new(
                ErrorKind::Unauthenticated,
                format!("the proof for key {} is wrong", auth.node.0),
            ),
        );
    }
    let ok = Frame::ok(
        kind::AUTH,
        frame.id,
        &AuthOk {
            proof: keys.manager_proof,
        },
    );
    let bytes = proto::encode(&ok, None).map_err(|e| e.to_string())?;
    stream.write_all(&bytes).map_err(|e| e.to_string())?;
    let writer = stream.try_clone().map_err(|e| e.to_string())?;
    events
        .send(Event::Authenticated {
            conn,
            key: auth.node.0,
            writer,
            mac: keys.manager_to_node,
        })
        .map_err(|_| "manager stopping".to_owned())?;
    // From here on the core closes silent nodes (heartbeats); no read timeout.
    stream.set_read_timeout(None).map_err(|e| e.to_string())?;
    let mut mac = keys.node_to_manager;
    loop {
        let frame = proto::read_frame(&mut stream, &mut decoder, Some(&mut mac))?;
        events
            .send(Event::Frame(conn, frame))
            .map_err(|_| "manager stopping".to_owned())?;
    }
}

struct Writer {
    stream: TcpStream,
    mac: Mac,
}

fn core_loop(mut core: ManagerCore, inbox: &Receiver<Event>, stop: &AtomicBool) {
    let mut writers: HashMap<ConnId, Writer> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wait = core
            .next_deadline()
            .map_or(Duration::from_millis(200), |d| {
                d.saturating_duration_since(now)
            })
            .min(Duration::from_millis(200));
        match inbox.recv_timeout(wait) {
            Ok(Event::Authenticated {
                conn,
                key,
                writer,
                mac,
            }) => {
                writers.insert(
                    conn,
                    Writer {
                        stream: writer,
                        mac,
                    },
                );
                core.authenticated(conn, key, Instant::now());
            }
            Ok(Event::Frame(conn, frame)) => core.frame(conn, frame, Instant::now()),
            Ok(Event::Closed(conn, reason)) => {
                if let Some(key) = core.conn_key(conn) {
                    log(&format!("connection of {key} ended: {reason}"));
                } else if reason.contains("closed") {
                    // A connection that ended before proving anything, quietly.
                } else {
                    log(&format!("connection refused: {reason}"));
                }
                if let Some(w) = writers.remove(&conn) {
                    let _ = w.stream.shutdown(Shutdown::Both);
                }
                core.disconnected(conn, Instant::now());
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        core.tick(Instant::now());
        for output in core.drain() {
            match output {
                Output::Log(line) => log(&line),
                Output::Send(conn, frame) => {
                    let Some(w) = writers.get_mut(&conn) else {
                        continue;
                    };
                    let sent = proto::encode(&frame, Some(&mut w.mac))
                        .map_err(|e| e.to_string())
                        .and_then(|b| w.stream.write_all(&b).map_err(|e| e.to_string()));
                    if let Err(e) = sent {
                        log(&format!("write to connection {conn} failed: {e}; closing"));
                        let _ = w.stream.shutdown(Shutdown::Both);
                    }
                }
                Output::Close(conn, reason) => {
                    if let Some(w) = writers.remove(&conn) {
                        log(&format!("closing connection {conn}: {reason}"));
                        let _ = w.stream.shutdown(Shutdown::Both);
                    }
                }
            }
        }
    }
    for (_, w) in writers {
        let _ = w.stream.shutdown(Shutdown::Both);
    }
}
