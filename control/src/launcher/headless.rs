//! Headless viscript: a Unix control socket through which any console command can be
//! sent (`skywire viscript exec s apptracker 127.0.0.1:20000`), and the client for it.
//!
//! The socket is bound by [`crate::local::socket`], like the node's control socket: 0600 in
//! a folder that others cannot write to (created 0700), a stale socket replaced, a live one
//! never taken over; only root and the socket's owner are served (`SO_PEERCRED`).
//!
//! Protocol: newline-delimited JSON, one request and one response per line.
//!
//! ```json
//! {"id": 1, "args": ["s", "apptracker", "127.0.0.1:20000"]}
//! {"id": 1, "ok": {"text": "started apptracker: id 1, pid 4242", "data": {"id": 1, ...}}}
//! {"id": 2, "args": ["attach", "1"], "since": 10}
//! {"id": 3, "error": {"kind": "not_found", "message": "no app with id 9 (see `la`)"}}
//! ```
//!
//! `text` is for people: whatever came from an app in it (output lines, what it reported
//! over signal) has its control characters escaped ([`crate::terminal`]); `data` keeps it
//! exact (JSON escapes it by itself), and [`HeadlessClient::follow`] escapes the lines it
//! prints. `args` are the command's words, kept exactly. `since` (for `attach` only) asks for the
//! output lines from that number on; the answer's `data.next` is the number to ask from
//! next. Error kinds: `bad_request` (not a command; a malformed line also closes the
//! connection), `not_found` (no such app or id), `failed`, `permission`. A request line is
//! at most 64 KiB; a connection idle for 60 s is closed.

use std::io::{self, BufReader, ErrorKind as IoErrorKind, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::command::{Command, parse_words};
use super::runtime::{Launcher, shown_lines};
use crate::local::{
    self, BoundSocket, ConnectFailure, ConnectionSlot, LineRead, StopSignal, bind_private,
    is_allowed, peer_uid, read_line,
};
use crate::terminal;

/// Where the headless socket lives unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/skywire/viscript.sock";

/// Idle connections are closed after this long.
const IDLE: Duration = Duration::from_secs(60);

/// At most this many connections at once.
const MAX_CONNECTIONS: usize = 16;

/// The longest request line read, in bytes, without its newline.
const MAX_REQUEST: usize = 64 * 1024;

/// A request on the socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// Echoed.
    pub id: u64,
    /// The command's words.
    pub args: Vec<String>,
    /// For `attach`: output from this line number on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
}

/// A bound headless socket.
#[derive(Debug)]
pub struct HeadlessServer {
    listener: UnixListener,
    socket: BoundSocket,
}

impl HeadlessServer {
    /// Bind the socket at `path`.
    pub fn bind(path: &Path) -> io::Result<Self> {
        let (listener, socket) = bind_private(path)?;
        Ok(Self { listener, socket })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        self.socket.path()
    }

    /// Serve commands for `launcher` until `stop` is stopped (also by a `quit` command,
    /// whose connection stops it), then remove the socket.
    ///
    /// The listener is waited for in `poll(2)` together with `stop`
    /// ([`StopSignal::accept_until_stopped`]): a connection is accepted the moment it
    /// arrives, so back-to-back `viscript exec` calls do not wait, and a stop ends the loop
    /// at once.
    pub fn serve(self, launcher: &Launcher, stop: &StopSignal) {
        let active = Arc::new(AtomicUsize::new(0));
        let owner = self.socket.owner_uid();
        if launcher.quit_requested() {
            return;
        }
        stop.accept_until_stopped(
            "viscript socket",
            self.listener.as_fd(),
            || self.listener.accept(),
            |(stream, _)| {
                let Some(slot) = ConnectionSlot::take_of(&active, MAX_CONNECTIONS) else {
                    return;
                };
                let (launcher, stop) = (launcher.clone(), stop.clone());
                let _ = thread::Builder::new()
                    .name("viscript-conn".to_owned())
                    .spawn(move || {
                        let _slot = slot;
                        serve_connection(&stream, &launcher, owner, &stop);
                    });
            },
        );
    }
}

/// The answer to one request line. Returns the response line and whether to close.
pub fn respond(line: &[u8], launcher: &Launcher) -> (Value, bool) {
    let request: Request = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => {
            return (
                error(None, "bad_request", &format!("not a request: {e}")),
                true,
            );
        }
    };
    let id = Some(request.id);
    let command = match parse_words(&request.args) {
        Ok(Some(command)) => command,
        Ok(None) => return (error(id, "bad_request", "no command given"), false),
        Err(e) => return (error(id, "bad_request", &e.to_string()), false),
    };
    if let (Command::Attach(app_id), Some(since)) = (&command, request.since) {
        return match launcher.output_since(*app_id, since) {
            Ok((lines, next, alive)) => (
                json!({"id": id, "ok": {"text": shown_lines(&lines), "data": {
                    "id": app_id, "lines": lines, "next": next, "alive": alive}}}),
                false,
            ),
            Err(e) => (error(id, e.kind(), &e.to_string()), false),
        };
    }
    match launcher.execute(&command) {
        Ok(reply) => (
            json!({"id": id, "ok": {"text": reply.text, "data": reply.data}}),
            false,
        ),
        Err(e) => (error(id, e.kind(), &e.to_string()), false),
    }
}

fn error(id: Option<u64>, kind: &str, message: &str) -> Value {
    json!({"id": id, "error": {"kind": kind, "message": message}})
}

fn serve_connection(stream: &UnixStream, launcher: &Launcher, owner: u32, stop: &StopSignal) {
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(IDLE)))
        .and_then(|()| stream.set_write_timeout(Some(IDLE)));
    let Ok(uid) = peer_uid(stream) else { return };
    let mut writer = stream;
    let send = |w: &mut &UnixStream, value: &Value| {
        let mut line = value.to_string().into_bytes();
        line.push(b'\n');
        w.write_all(&line)
    };
    if setup.is_err() {
        return;
    }
    if !is_allowed(uid, owner) {
        let message = format!(
            "uid {uid} may not use this viscript socket: only root and uid {owner}, its owner, may"
        );
        let _ = send(&mut writer, &error(None, "permission", &message));
        return;
    }
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        let (response, close) = match read_line(&mut reader, MAX_REQUEST, &mut line) {
            Ok(LineRead::Line) if line.trim_ascii().is_empty() => continue,
            Ok(LineRead::Line) => respond(&line, launcher),
            Ok(LineRead::TooLong) => (
                error(None, "bad_request", "a request line is at most 64 KiB"),
                true,
            ),
            Ok(LineRead::Eof | LineRead::Truncated) | Err(_) => return,
        };
        let sent = send(&mut writer, &response);
        // `quit` answers first, then ends the accept loop.
        if launcher.quit_requested() {
            stop.stop();
        }
        if sent.is_err() || close {
            return;
        }
    }
}

/// Why talking to headless viscript failed.
#[derive(Debug, thiserror::Error)]
pub enum HeadlessError {
    /// Nothing listens on the socket.
    #[error("is `skywire viscript --headless` running? cannot connect to {}", path.display())]
    NotRunning {
        /// The socket.
        path: PathBuf,
        /// The connect error.
        #[source]
        source: io::Error,
    },
    /// This user may not use the socket.
    #[error("permission denied on {}: run as root or as the user running viscript", path.display())]
    Permission {
        /// The socket.
        path: PathBuf,
    },
    /// The command failed; viscript said why.
    #[error("{message}")]
    Command {
        /// The error kind.
        kind: String,
        /// Viscript's message.
        message: String,
    },
    /// Talking failed midway.
    #[error("talking to viscript at {} failed", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl HeadlessError {
    /// Exit code 69: nothing answers.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::NotRunning { .. })
    }

    /// Exit code 77: not allowed.
    pub fn is_permission(&self) -> bool {
        matches!(self, Self::Permission { .. })
    }

    /// Exit code 2: not a command (a usage error).
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::Command { kind, .. } if kind == "bad_request")
    }
}

/// The text of `value.key`, if it is text.
fn text_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// A connection to headless viscript.
#[derive(Debug)]
pub struct HeadlessClient {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl HeadlessClient {
    /// Connect to the socket at `path`.
    pub fn connect(path: &Path) -> Result<Self, HeadlessError> {
        let stream = local::connect(path).map_err(|failure| match failure {
            ConnectFailure::PermissionDenied(_) => HeadlessError::Permission {
                path: path.to_owned(),
            },
            ConnectFailure::NotRunning(source) | ConnectFailure::Other(source) => {
                HeadlessError::NotRunning {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        let io = |source| HeadlessError::Io {
            path: path.to_owned(),
            source,
        };
        stream.set_read_timeout(Some(IDLE)).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        Ok(Self {
            path: path.to_owned(),
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
        })
    }

    /// Run the command `args`; returns the `ok` body (`text` and `data`).
    pub fn exec(&mut self, args: &[String], since: Option<u64>) -> Result<Value, HeadlessError> {
        let io = |source| HeadlessError::Io {
            path: self.path.clone(),
            source,
        };
        let request = Request {
            id: self.next_id,
            args: args.to_vec(),
            since,
        };
        self.next_id += 1;
        let mut line = serde_json::to_vec(&request)
            .map_err(|e| io(io::Error::new(IoErrorKind::InvalidData, e)))?;
        line.push(b'\n');
        // A `permission` answer may come before the request is read.
        let _ = self.writer.write_all(&line);
        let mut buf = Vec::new();
        match read_line(&mut self.reader, 16 << 20, &mut buf).map_err(io)? {
            LineRead::Line => {}
            _ => return Err(io(IoErrorKind::UnexpectedEof.into())),
        }
        let response: Value = serde_json::from_slice(&buf)
            .map_err(|e| io(io::Error::new(IoErrorKind::InvalidData, e)))?;
        if let Some(err) = response.get("error") {
            let kind = text_field(err, "kind").unwrap_or("failed").to_owned();
            let message = text_field(err, "message").unwrap_or_default().to_owned();
            if kind == "permission" {
                return Err(HeadlessError::Permission {
                    path: self.path.clone(),
                });
            }
            return Err(HeadlessError::Command { kind, message });
        }
        Ok(response.get("ok").cloned().unwrap_or(Value::Null))
    }

    /// Follow the output of app `id`, writing lines to `out`, until its process is gone
    /// for good or `stop` is set.
    pub fn follow(
        &mut self,
        id: u64,
        out: &mut dyn Write,
        stop: &AtomicBool,
    ) -> Result<(), HeadlessError> {
        let args = ["attach".to_owned(), id.to_string()];
        let mut since = 0;
        loop {
            let ok = self.exec(&args, Some(since))?;
            let data = ok.get("data").unwrap_or(&Value::Null);
            let lines = data.get("lines").and_then(Value::as_array);
            for line in lines.into_iter().flatten() {
                let line = line.as_str().unwrap_or_default();
                let _ = writeln!(out, "{}", terminal::safe(line));
            }
            let _ = out.flush();
            since = data.get("next").and_then(Value::as_u64).unwrap_or(since);
            let alive = data.get("alive").and_then(Value::as_bool).unwrap_or(false);
            if !alive || stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::launcher::LauncherOptions;
    use crate::local::socket::tests::TempDir;
    use crate::signal::SignalServer;
    use std::io::{BufRead, Read};
    use std::os::unix::fs::PermissionsExt;

    fn launcher() -> Launcher {
        let apps = Config::parse("apps:\n  t:\n    path: /bin/true\n", "c.yaml")
            .unwrap()
            .apps;
        let signal = SignalServer::bind("127.0.0.1:0").unwrap().spawn().unwrap();
        Launcher::new(apps, signal, LauncherOptions::default()).unwrap()
    }

    #[test]
    fn respond_runs_commands_and_refuses_bad_requests() {
        let launcher = launcher();
        let (ok, close) = respond(br#"{"id": 4, "args": ["apps"]}"#, &launcher);
        assert!(!close);
        assert_eq!(ok["id"], 4);
        assert_eq!(ok["ok"]["data"][0]["name"], "t");
        let (err, close) = respond(br#"{"id": 5, "args": ["sd", "x"]}"#, &launcher);
        assert_eq!(
            (err["error"]["kind"].as_str(), close),
            (Some("bad_request"), false)
        );
        let (err, close) = respond(br#"{"id": 6, "args": ["sd", "9"]}"#, &launcher);
        assert_eq!(
            (err["error"]["kind"].as_str(), close),
            (Some("not_found"), false)
        );
        let (err, close) = respond(b"not json", &launcher);
        assert_eq!(
            (err["error"]["kind"].as_str(), close),
            (Some("bad_request"), true)
        );
        assert!(err["id"].is_null());
        launcher.shutdown();
    }

    #[test]
    fn a_stop_ends_serving_at_once_and_removes_the_socket() {
        let dir = TempDir::new();
        let path = dir.0.join("run").join("v.sock");
        let server = HeadlessServer::bind(&path).unwrap();
        let launcher = launcher();
        let stop = StopSignal::new().unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        {
            let (launcher, stop) = (launcher.clone(), stop.clone());
            thread::spawn(move || {
                server.serve(&launcher, &stop);
                let _ = done_tx.send(());
            });
        }
        // Connections one after another, each served as it arrives.
        for _ in 0..5 {
            let mut client = HeadlessClient::connect(&path).unwrap();
            assert_eq!(
                client.exec(&["la".to_owned()], None).unwrap()["data"],
                json!([])
            );
        }
        assert!(done_rx.try_recv().is_err(), "serve ended before the stop");
        stop.stop();
        done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(!path.exists());
        launcher.shutdown();
    }

    #[test]
    fn a_bad_request_closes_only_its_connection() {
        let dir = TempDir::new();
        let path = dir.0.join("run").join("v.sock");
        let server = HeadlessServer::bind(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let launcher = launcher();
        let stop = StopSignal::new().unwrap();
        let thread = {
            let (launcher, stop) = (launcher.clone(), stop.clone());
            thread::spawn(move || server.serve(&launcher, &stop))
        };
        let mut bad = UnixStream::connect(&path).unwrap();
        bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        bad.write_all(b"{\"id\": \n").unwrap();
        let mut reader = BufReader::new(&bad);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.contains("bad_request"), "{line}");
        let mut rest = Vec::new();
        assert_eq!(reader.read_to_end(&mut rest).unwrap(), 0);

        let mut client = HeadlessClient::connect(&path).unwrap();
        let ok = client.exec(&["la".to_owned()], None).unwrap();
        assert_eq!(ok["data"], serde_json::json!([]));
        let err = client.exec(&["frob".to_owned()], None).unwrap_err();
        assert!(err.is_usage(), "{err}");
        let ok = client.exec(&["quit".to_owned()], None).unwrap();
        assert_eq!(ok["data"]["quit"], true);
        thread.join().unwrap();
        launcher.shutdown();
        assert!(!path.exists());
        let err = HeadlessClient::connect(&path).unwrap_err();
        assert!(err.is_unavailable());
    }
}
